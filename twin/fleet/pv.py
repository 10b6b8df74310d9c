"""PV inverters: irradiance -> DC -> AC, capped by inverter rating and curtailment setpoint."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from twin.fleet.base import Ambient, Ambients, Fleet, integrate_steps
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


@njit(cache=True)
def pv_steps(p_peak_kw, s_rated_kva, efficiency, temp_coeff_per_c, p_limit_pct, q_set_kvar,
             available, ghi_w_m2, t_out_c, p_kw, q_kvar, p_avail_kw, p_sum, avail_sum):
    """`pv_ac_kw` and the curtailment/Q rules over k steps (same arithmetic, element by
    element); per-step sums of p_kw and p_avail_kw; last step's P, Q, available P per device."""
    for i in range(p_peak_kw.size):
        lim = p_limit_pct[i] / 100.0 * s_rated_kva[i]
        on = available[i]
        pa = 0.0
        pac = 0.0
        for k in range(ghi_w_m2.size):
            g = ghi_w_m2[k]
            t_cell = t_out_c[k] + 0.03 * g
            derate = 1.0 + temp_coeff_per_c[i] * (t_cell - 25.0)
            dc = p_peak_kw[i] * (g / 1000.0) * derate
            pa = min(max(dc * efficiency[i], 0.0), s_rated_kva[i])
            pac = min(pa, lim) if on else 0.0
            p_sum[k] += -pac
            avail_sum[k] += pa
        p_avail_kw[i] = pa
        p_kw[i] = -pac
        room = math.sqrt(max(s_rated_kva[i] * s_rated_kva[i] - pac * pac, 0.0))
        q_kvar[i] = min(max(q_set_kvar[i], -room), room) if on else 0.0


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
        self._run(dt_s, Ambients.of(amb))

    def advance(self, dt_s: float, ambs: Ambients) -> None:
        p_sum = self._run(dt_s, ambs)
        self.energy_kwh = integrate_steps(self.energy_kwh, p_sum, dt_s)

    def _run(self, dt_s: float, ambs: Ambients) -> np.ndarray:
        """k steps in one kernel call; returns the per-step sums of p_kw."""
        k = len(ambs)
        p_sum, avail_sum = np.zeros(k), np.zeros(k)
        self.p_kw, self.q_kvar, self.p_avail_kw = np.empty(self.n), np.empty(self.n), np.empty(self.n)
        pv_steps(self.p_peak_kw, self.s_rated_kva, self.efficiency, self.temp_coeff_per_c,
                 self.p_limit_pct, self.q_set_kvar, self.available, ambs.ghi_w_m2, ambs.t_out_c,
                 self.p_kw, self.q_kvar, self.p_avail_kw, p_sum, avail_sum)
        self.curtailed_kwh = integrate_steps(self.curtailed_kwh, avail_sum + p_sum, dt_s)
        return p_sum

    def telemetry(self):
        return {"p_kw": self.p_kw, "q_kvar": self.q_kvar, "p_avail_kw": self.p_avail_kw,
                "p_limit_pct": self.p_limit_pct}

    def aggregates(self):
        return {"p_kw": float(self.p_kw.sum()), "q_kvar": float(self.q_kvar.sum()),
                "p_avail_kw": float(self.p_avail_kw.sum())}

    def kpis(self):
        return super().kpis() | {"curtailed_kwh": round(self.curtailed_kwh, 3),
                                 "p_peak_kw_total": round(float(self.p_peak_kw.sum()), 1)}
