"""Battery: steered by `p_set_kw` (load +: charging), ±p_max_kw; DR and emergencies discharge
it as far as its energy above soc_min holds for the time asked; released to its schedule."""

from __future__ import annotations

import numpy as np

from controller.kinds.base import Kind, finite


class Battery(Kind):
    name = "battery"
    ratings = ("p_max_kw", "e_cap_kwh", "soc_min_kwh", "soc_max_kwh", "eta_ch", "eta_dis")
    ramp_frac_per_s = 0.2
    setpoints = ("p_set_kw", "q_set_kvar")
    dr_setpoint = "p_set_kw"
    response_s = 1.0
    restore_rank = 3
    shed_order = 0

    def bounds(self, g, sp):
        if sp == "p_set_kw":
            p = self.size_kw(g)
            return -p, p
        return super().bounds(g, sp)

    def plan_ratings(self, g, j) -> dict:
        """What the schedule optimiser needs for devices j, with defaults for what a device does
        not state: 10 kWh, reserve 10 % and ceiling 95 % of capacity, 95 % efficiencies."""
        e_cap = g.rating("e_cap_kwh", 10.0)[j]
        lo, hi = g.rating("soc_min_kwh")[j], g.rating("soc_max_kwh")[j]
        return {"p_max_kw": g.rating("p_max_kw")[j], "e_cap_kwh": e_cap, "soc_kwh": g.get("soc_kwh")[j],
                "soc_min_kwh": np.where(np.isfinite(lo), lo, 0.1 * e_cap),
                "soc_max_kwh": np.where(np.isfinite(hi), hi, 0.95 * e_cap),
                "eta_ch": g.rating("eta_ch", 0.95)[j], "eta_dis": g.rating("eta_dis", 0.95)[j]}

    def energy_kwh(self, g) -> np.ndarray:
        """Energy it can still deliver to the grid (above soc_min, after losses); NaN unknown."""
        soc = g.get("soc_kwh")
        return np.maximum(soc - finite(g.rating("soc_min_kwh", 0.0), 0.0), 0.0) * finite(
            g.rating("eta_dis", 0.95), 0.95)

    def baseline_kw(self, g, base_set=None, **_):
        return np.zeros(g.n) if base_set is None else np.asarray(base_set, float)

    released = baseline_kw

    def headroom_kw(self, g, baseline, hold_h):
        p_energy = self.energy_kwh(g) / max(hold_h, 1e-3)
        h = baseline + np.minimum(g.rating("p_max_kw"), p_energy)
        return np.where(g.usable() & np.isfinite(h), np.maximum(h, 0.0), 0.0)

    def setpoint_for_cut(self, g, baseline, cut_kw):
        p_max = g.rating("p_max_kw")
        return np.clip(baseline - cut_kw, -p_max, p_max)

    def shed(self, g, p_kw, t, default_hold_s):
        """Full discharge from p_kw (margin p + p_max), held as long as the energy lasts; an
        empty battery can only stop charging, which holds as long as needed."""
        p_max = g.rating("p_max_kw")
        e = np.nan_to_num(self.energy_kwh(g))
        has = e > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            hold = np.where(p_max > 0, 3600.0 * e / p_max, 0.0)
        margin = np.where(has, np.maximum(p_kw + p_max, 0.0), np.maximum(p_kw, 0.0))
        return margin, np.where(has, hold, np.inf), np.where(has, -p_max, 0.0)
