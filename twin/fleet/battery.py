"""Batteries: SOC bookkeeping with charge/discharge efficiencies and power/energy limits."""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from twin.fleet.base import Ambient, Ambients, Fleet, integrate_steps
from twin.params import check_order, draw_all

DEFAULTS = {"e_cap_kwh": 10.0, "p_max_kw": 5.0, "eta_ch": 0.95, "eta_dis": 0.95,
            "soc_min_pct": 10.0, "soc_max_pct": 95.0, "soc_init_pct": 50.0}
BOUNDS = {"e_cap_kwh": (0.01, 1e6), "p_max_kw": (0.0, 1e6), "eta_ch": (0.5, 1.0),
          "eta_dis": (0.5, 1.0), "soc_min_pct": (0.0, 100.0), "soc_max_pct": (0.0, 100.0),
          "soc_init_pct": (0.0, 100.0)}


@njit(cache=True)
def battery_steps(p_set_kw, p_max_kw, soc_kwh, soc_min_kwh, soc_max_kwh, eta_ch, eta_dis,
                  available, dt_s, q_set_kvar, p_out_kw, q_out_kvar, p_sum, abs_sum):
    """k = p_sum.size steps: clip each setpoint to power and energy room for the step, update
    SOC in place; per-step sums of P and |P|; last step's P and Q (Q within the P headroom).
    A device whose clipped setpoint is 0 draws nothing and keeps its SOC: skipped."""
    dt_h = dt_s / 3600.0
    for i in range(p_set_kw.size):
        p0 = min(max(p_set_kw[i], -p_max_kw[i]), p_max_kw[i]) if available[i] else 0.0
        p = 0.0
        if p0 != 0.0:
            soc = soc_kwh[i]
            for k in range(p_sum.size):
                p = p0
                if p > 0.0:
                    room = (soc_max_kwh[i] - soc) / (eta_ch[i] * dt_h)
                    p = min(p, max(room, 0.0))
                    soc = min(soc + p * eta_ch[i] * dt_h, soc_max_kwh[i])
                elif p < 0.0:
                    room = (soc - soc_min_kwh[i]) * eta_dis[i] / dt_h
                    p = max(p, -max(room, 0.0))
                    soc = max(soc + p / eta_dis[i] * dt_h, soc_min_kwh[i])
                p_sum[k] += p
                abs_sum[k] += abs(p)
            soc_kwh[i] = soc
        p_out_kw[i] = p
        room_q = math.sqrt(max(p_max_kw[i] * p_max_kw[i] - p * p, 0.0))
        q_out_kvar[i] = min(max(q_set_kvar[i], -room_q), room_q) if available[i] else 0.0


class BatteryFleet(Fleet):
    """Setpoint: `p_set_kw` (load convention: + charge, - discharge), within ±p_max_kw."""

    KIND = "battery"
    SETPOINTS = {"p_set_kw": ("p_min_kw", "p_max_kw"), "q_set_kvar": ("q_min_kvar", "q_max_kvar")}

    def __init__(self, group, bus, rng):
        super().__init__(group.name, bus)
        p = draw_all(group, DEFAULTS, rng, BOUNDS)
        check_order(group, p, "soc_min_pct", "soc_max_pct")
        self.e_cap_kwh, self.p_max_kw = p["e_cap_kwh"], p["p_max_kw"]
        self.p_min_kw = -self.p_max_kw
        self.q_max_kvar = self.p_max_kw.copy()
        self.q_min_kvar = -self.q_max_kvar
        self.eta_ch, self.eta_dis = p["eta_ch"], p["eta_dis"]
        self.soc_min_kwh = p["soc_min_pct"] / 100.0 * self.e_cap_kwh
        self.soc_max_kwh = np.maximum(p["soc_max_pct"] / 100.0 * self.e_cap_kwh, self.soc_min_kwh)
        self.soc_kwh = np.clip(p["soc_init_pct"] / 100.0 * self.e_cap_kwh, self.soc_min_kwh,
                               self.soc_max_kwh)
        self.p_set_kw = np.zeros(self.n)
        self.q_set_kvar = np.zeros(self.n)
        self.throughput_kwh = 0.0

    def step(self, dt_s: float, amb: Ambient) -> None:
        self._run(dt_s, 1)

    def advance(self, dt_s: float, ambs: Ambients) -> None:
        self.energy_kwh = integrate_steps(self.energy_kwh, self._run(dt_s, len(ambs)), dt_s)

    def _run(self, dt_s: float, k: int) -> np.ndarray:
        """k steps at the held setpoints in one kernel call; returns the per-step sums of P."""
        p_sum, abs_sum = np.zeros(k), np.zeros(k)
        self.q_kvar = np.empty(self.n)
        battery_steps(self.p_set_kw, self.p_max_kw, self.soc_kwh, self.soc_min_kwh,
                      self.soc_max_kwh, self.eta_ch, self.eta_dis, self.available, dt_s,
                      self.q_set_kvar, self.p_kw, self.q_kvar, p_sum, abs_sum)
        self.throughput_kwh = integrate_steps(self.throughput_kwh, abs_sum, dt_s)
        return p_sum

    @property
    def soc_pct(self) -> np.ndarray:
        return 100.0 * self.soc_kwh / self.e_cap_kwh

    def telemetry(self):
        return {"p_kw": self.p_kw, "q_kvar": self.q_kvar, "soc_kwh": self.soc_kwh,
                "soc_pct": self.soc_pct, "p_set_kw": self.p_set_kw}

    def aggregates(self):
        return {"p_kw": float(self.p_kw.sum()), "soc_kwh": float(self.soc_kwh.sum())}

    def kpis(self):
        return super().kpis() | {"throughput_kwh": round(self.throughput_kwh, 3),
                                 "soc_kwh_end": round(float(self.soc_kwh.sum()), 3)}
