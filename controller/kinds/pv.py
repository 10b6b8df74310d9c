"""PV inverter: active power capped by `p_limit_pct` of its rating (s_rated_kva), reactive
power by `q_set_kvar` (default range 0.44 x rating, i.e. PF 0.9 at full output). Offers no
load reduction: its baseline is what the sun gives (-p_avail_kw)."""

from __future__ import annotations

import numpy as np

from controller.kinds.base import Kind


class Pv(Kind):
    name = "pv"
    ratings = ("s_rated_kva", "p_peak_kw")
    ramp_frac_per_s = 0.1
    setpoints = ("p_limit_pct", "q_set_kvar")
    rating_kw = "s_rated_kva"

    def bounds(self, g, sp):
        if sp == "p_limit_pct":
            return np.zeros(g.n), np.full(g.n, 100.0)
        return super().bounds(g, sp)

    def q_max_kvar(self, g):
        q = g.rating("q_max_kvar")
        return np.where(np.isfinite(q), q, 0.44 * self.size_kw(g))

    def injection(self, g, sp, v, cur):
        if sp != "p_limit_pct":
            return super().injection(g, sp, v, cur)
        s = self.size_kw(g)
        avail = g.get("p_avail_kw")
        avail = np.where(np.isfinite(avail), avail, s)  # unknown: assume full output
        return -np.fmin(avail, np.asarray(v, float) / 100.0 * s), np.zeros(g.n)

    def setpoint_for(self, g, sp, inj, cur):
        if sp != "p_limit_pct":
            return super().setpoint_for(g, sp, inj, cur)
        return np.clip(-np.asarray(inj, float) / self.size_kw(g) * 100.0, 0.0, 100.0)

    def baseline_kw(self, g, base_set=None, **_):
        return -g.get("p_avail_kw")
