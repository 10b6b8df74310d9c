"""PV inverters: irradiance -> DC -> AC, capped by inverter rating and curtailment setpoint."""

from __future__ import annotations

import numpy as np

from twin.fleet.base import Ambient, Fleet
from twin.params import draw_all

DEFAULTS = {"p_peak_kw": 10.0, "s_rated_kva": 10.0, "efficiency": 0.96, "temp_coeff_per_c": -0.004}
BOUNDS = {"p_peak_kw": (0.0, 1e5), "s_rated_kva": (0.01, 1e5), "efficiency": (0.5, 1.0),
          "temp_coeff_per_c": (-0.01, 0.0)}


def pv_ac_kw(p_peak_kw, s_rated_kva, ghi_w_m2: float, t_out_c: float,
             efficiency=DEFAULTS["efficiency"], temp_coeff_per_c=DEFAULTS["temp_coeff_per_c"]):
    """The one PV model (fleet inverters and the feeder's own PV generators): irradiance on the
    rated DC power, cell-temperature derating (NOCT-like rise of 0.03 C per W/m2), inverter
    efficiency, capped at the inverter rating (kW, generation positive)."""
    t_cell = t_out_c + 0.03 * ghi_w_m2
    derate = 1.0 + temp_coeff_per_c * (t_cell - 25.0)
    dc_kw = p_peak_kw * (ghi_w_m2 / 1000.0) * derate
    return np.minimum(np.maximum(dc_kw * efficiency, 0.0), s_rated_kva)


class PvFleet(Fleet):
    """Setpoints: `p_limit_pct` (of s_rated_kva, SunSpec WMaxLimPct) and `q_set_kvar`."""

    KIND = "pv"
    SETPOINTS = {"p_limit_pct": (0.0, 100.0), "q_set_kvar": ("q_min_kvar", "q_max_kvar")}

    def __init__(self, group, bus, rng):
        super().__init__(group.name, bus)
        p = draw_all(group, DEFAULTS, rng, BOUNDS)
        self.p_peak_kw, self.s_rated_kva = p["p_peak_kw"], p["s_rated_kva"]
        self.efficiency, self.temp_coeff_per_c = p["efficiency"], p["temp_coeff_per_c"]
        self.q_max_kvar = 0.44 * self.s_rated_kva  # cos phi 0.9 capability
        self.q_min_kvar = -self.q_max_kvar
        self.p_limit_pct = np.full(self.n, 100.0)
        self.q_set_kvar = np.zeros(self.n)
        self.p_avail_kw = np.zeros(self.n)  # what the panels could deliver (AC, before curtailment)
        self.curtailed_kwh = 0.0

    def step(self, dt_s: float, amb: Ambient) -> None:
        self.p_avail_kw = pv_ac_kw(self.p_peak_kw, self.s_rated_kva, amb.ghi_w_m2, amb.t_out_c,
                                   self.efficiency, self.temp_coeff_per_c)
        p_ac = np.minimum(self.p_avail_kw, self.p_limit_pct / 100.0 * self.s_rated_kva)
        p_ac = np.where(self.available, p_ac, 0.0)
        q_room = np.sqrt(np.maximum(self.s_rated_kva**2 - p_ac**2, 0.0))
        self.q_kvar = np.where(self.available, np.clip(self.q_set_kvar, -q_room, q_room), 0.0)
        self.p_kw = -p_ac
        self.curtailed_kwh += float(self.p_avail_kw.sum() + self.p_kw.sum()) * dt_s / 3600.0

    def telemetry(self):
        return {"p_kw": self.p_kw, "q_kvar": self.q_kvar, "p_avail_kw": self.p_avail_kw,
                "p_limit_pct": self.p_limit_pct}

    def aggregates(self):
        return {"p_kw": float(self.p_kw.sum()), "q_kvar": float(self.q_kvar.sum()),
                "p_avail_kw": float(self.p_avail_kw.sum())}

    def kpis(self):
        return super().kpis() | {"curtailed_kwh": round(self.curtailed_kwh, 3),
                                 "p_peak_kw_total": round(float(self.p_peak_kw.sum()), 1)}
