"""EV charger: steered by its charging cap `p_max_set_kw` (0..p_max_kw). Baseline: full rate
while the car still needs energy; DR and emergencies lower the cap, release lifts it to the
rating. An emergency hold lasts until the car must restart to still be full by departure."""

from __future__ import annotations

import numpy as np

from controller.kinds.base import Kind


class Ev(Kind):
    name = "ev"
    ratings = ("p_max_kw", "eta")
    ramp_frac_per_s = 0.2
    setpoints = ("p_max_set_kw",)
    dr_setpoint = "p_max_set_kw"
    response_s = 5.0
    restore_rank = 2
    shed_order = 1

    def bounds(self, g, sp):
        return np.zeros(g.n), self.size_kw(g)

    def injection(self, g, sp, v, cur):
        v = np.asarray(v, float)
        conn = g.get("connected")
        p_max = g.rating("p_max_kw")
        demand = np.where(np.isfinite(conn), conn * p_max, p_max)
        demand = np.where(np.isfinite(demand), demand, v)
        need = g.get("e_need_kwh")  # a full car draws nothing, whatever its cap
        demand = np.where(np.isfinite(need) & (need < 0.05), 0.0, demand)
        return np.minimum(v, demand), np.zeros(g.n)

    def setpoint_for(self, g, sp, inj, cur):
        return np.maximum(np.asarray(inj, float), 0.0)

    def baseline_kw(self, g, base_set=None, cf_need_kwh=None, dt_h: float = 1 / 60, **_):
        """Full rate while the counterfactual need (`cf_need_kwh`, grid side, tracked from the
        event start by `counterfactual`) lasts, else while the car reports a need; never above
        the scheduled cap `base_set` (the schedule's p_max_set_kw) where there is one."""
        p_max = g.rating("p_max_kw")
        conn = g.get("connected")
        if cf_need_kwh is not None:
            base = np.where(conn > 0.5, np.minimum(p_max, np.nan_to_num(cf_need_kwh) / dt_h), 0.0)
        else:
            need = g.get("e_need_kwh")
            base = np.where((conn > 0.5) & ~(need < 0.05), p_max, 0.0)  # unknown need: wants
        if base_set is not None:
            base = np.fmin(base, base_set)
        return np.where(np.isfinite(conn), base, np.nan)

    def counterfactual(self, g, cf: np.ndarray | None) -> np.ndarray:
        """Grid-side energy each plugged-in car would still draw without DR: its reported need
        when first seen during the event, forgotten when it leaves."""
        conn = g.get("connected") > 0.5
        need = g.get("e_need_kwh") / g.rating("eta", 0.92)
        cf = np.full(g.n, np.nan) if cf is None else cf.copy()
        new = conn & np.isnan(cf)
        cf[new] = np.where(np.isfinite(need[new]), need[new], np.inf)
        cf[~conn] = np.nan
        return cf

    def headroom_kw(self, g, baseline, hold_h):
        return np.where(g.usable() & np.isfinite(baseline), np.maximum(baseline, 0.0), 0.0)

    def setpoint_for_cut(self, g, baseline, cut_kw):
        return np.clip(np.nan_to_num(baseline) - cut_kw, 0.0, g.rating("p_max_kw"))

    def released(self, g, base_set=None):
        """Back to the schedule's cap, else to the owner (full rate)."""
        return g.rating("p_max_kw") if base_set is None else np.asarray(base_set, float)

    def shed(self, g, p_kw, t, default_hold_s):
        p_max = g.rating("p_max_kw")
        dep = g.get("departure_t")
        with np.errstate(divide="ignore", invalid="ignore"):
            need_s = np.where(p_max > 0, 3600.0 * np.nan_to_num(g.get("e_need_kwh")) / p_max, 0.0)
        hold = np.where(np.isfinite(dep), np.maximum(dep - t - need_s, 0.0), default_hold_s)
        return np.maximum(p_kw, 0.0), hold, np.zeros(g.n)
