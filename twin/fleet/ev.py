"""EV chargers: sessions (arrival, departure, energy need) and a charging-rate setpoint.

Sessions are drawn per charger per day at construction, sorted by arrival; the device step
plugs in the cars that have arrived by its time (in the numba kernel, so arrivals do not cut
batched device steps short) and unplugs them at departure. A car that arrived before the run
starts plugged in with what the same rule (full rate from arrival) would have left it to
charge, as if the run had been going.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from twin.fleet.base import Ambient, Ambients, Fleet, integrate_steps
from twin.params import draw_all

DEFAULTS = {"p_max_kw": 11.0, "arrival_h_mean": 18.0, "arrival_h_std": 1.5,
            "dwell_h_mean": 12.0, "dwell_h_std": 2.0, "energy_kwh_mean": 15.0,
            "energy_kwh_std": 5.0, "eta": 0.92}
BOUNDS = {"p_max_kw": (0.0, 1000.0), "arrival_h_mean": (0.0, 24.0), "dwell_h_mean": (0.1, 72.0),
          "energy_kwh_mean": (0.0, 200.0), "eta": (0.5, 1.0)}


@njit(cache=True)
def ev_steps(t_s, dt_s, sessions, j, connected, departure_s, e_need_kwh, p_max_set_kw, p_max_kw,
             eta, available, p_kw, p_sum, delivered_sum, unmet_sum):
    """k = t_s.size steps. Before each step: plug in the sessions that have arrived by then
    (rows of `sessions` from index j, sorted by arrival; a charger still holding a car skips the
    new one; a car that arrived before the run needs what full-rate charging since its arrival
    left it). Each step: departures at their time (energy still needed counts as unmet),
    charging at the cap while short of the need. Per-step sums of P, delivered P x eta and
    unmet energy; last step's P per device. Returns the next session index."""
    n_sess = sessions.shape[0]
    for k in range(t_s.size):
        t = t_s[k]
        while j < n_sess and sessions[j, 1] <= t:
            i = int(sessions[j, 0])
            if not connected[i]:
                arr = sessions[j, 1]
                need = sessions[j, 3]
                connected[i] = True
                departure_s[i] = sessions[j, 2]
                if arr >= 0:
                    e_need_kwh[i] = need
                else:  # arrived before the run: charged by the same rule (full rate) until t = 0
                    e_need_kwh[i] = max(0.0, need - p_max_kw[i] * eta[i] * (-arr) / 3600.0)
            j += 1
        for i in range(connected.size):
            p = 0.0
            if connected[i]:
                e = e_need_kwh[i]
                if t >= departure_s[i]:
                    unmet_sum[k] += e
                    connected[i] = False
                    e = 0.0
                    departure_s[i] = np.inf
                cap = e / eta[i] * 3600.0 / dt_s
                if connected[i] and available[i]:
                    p = min(min(p_max_set_kw[i], p_max_kw[i]), cap)
                e = max(e - p * eta[i] * dt_s / 3600.0, 0.0)
                e_need_kwh[i] = e
                p_sum[k] += p
                delivered_sum[k] += p * eta[i]
            p_kw[i] = p
    return j


class EvFleet(Fleet):
    """Setpoint: `p_max_set_kw` (charging-rate cap, 0..p_max_kw). Charges at the cap while
    plugged in and short of its energy need."""

    KIND = "ev"
    SETPOINTS = {"p_max_set_kw": (0.0, "p_max_kw")}

    def __init__(self, group, bus, rng, start_hour: float, duration_s: float):
        super().__init__(group.name, bus)
        p = draw_all(group, DEFAULTS, rng, BOUNDS)
        self.p_max_kw, self.eta = p["p_max_kw"], p["eta"]
        self.p_max_set_kw = self.p_max_kw.copy()
        self.connected = np.zeros(self.n, dtype=bool)
        self.e_need_kwh = np.zeros(self.n)  # energy still wanted by the plugged-in vehicle
        self.departure_s = np.full(self.n, np.inf)
        self.delivered_kwh = 0.0
        self.unmet_kwh = 0.0  # energy short at departure, summed over sessions
        self.sessions = self._draw_sessions(p, rng, start_hour, duration_s)
        self._next_session = 0  # sessions before this row have arrived (plugged in or skipped)

    def _draw_sessions(self, p, rng, start_hour, duration_s):
        days = int(np.ceil((start_hour * 3600 + duration_s) / 86400.0)) + 1
        rows = []
        for d in range(-1, days):
            arr_h = rng.normal(p["arrival_h_mean"], p["arrival_h_std"].clip(0)) + 24 * d
            dwell = np.clip(rng.normal(p["dwell_h_mean"], p["dwell_h_std"].clip(0)), 0.5, 48)
            need = np.clip(rng.normal(p["energy_kwh_mean"], p["energy_kwh_std"].clip(0)), 1, None)
            arr_s = (arr_h - start_hour) * 3600.0
            rows.append(np.stack([np.arange(self.n), arr_s, arr_s + dwell * 3600.0, need], 1))
        s = np.concatenate(rows)
        s = s[(s[:, 2] > 0) & (s[:, 1] < duration_s)]
        return s[np.argsort(s[:, 1], kind="stable")]

    def step(self, dt_s: float, amb: Ambient) -> None:
        self._run(dt_s, np.array([amb.t_s]))

    def advance(self, dt_s: float, ambs: Ambients) -> None:
        self.energy_kwh = integrate_steps(self.energy_kwh, self._run(dt_s, ambs.t_s), dt_s)

    def _run(self, dt_s: float, t_s: np.ndarray) -> np.ndarray:
        """The steps at times t_s in one kernel call; returns the per-step sums of P."""
        k = t_s.size
        p_sum, delivered, unmet = np.zeros(k), np.zeros(k), np.zeros(k)
        self.p_kw = np.empty(self.n)
        self._next_session = ev_steps(t_s, dt_s, self.sessions, self._next_session, self.connected,
                                      self.departure_s, self.e_need_kwh, self.p_max_set_kw,
                                      self.p_max_kw, self.eta, self.available, self.p_kw, p_sum,
                                      delivered, unmet)
        self.delivered_kwh = integrate_steps(self.delivered_kwh, delivered, dt_s)
        for u in unmet:
            self.unmet_kwh += float(u)
        return p_sum

    def telemetry(self):
        return {"p_kw": self.p_kw, "connected": self.connected.astype(float),
                "e_need_kwh": self.e_need_kwh, "p_max_set_kw": self.p_max_set_kw,
                "departure_s": self.departure_s}

    def aggregates(self):
        return {"p_kw": float(self.p_kw.sum()), "connected": float(self.connected.sum()),
                "e_need_kwh": float(self.e_need_kwh.sum())}

    def kpis(self):
        return super().kpis() | {"delivered_kwh": round(self.delivered_kwh, 3), "unmet_kwh": round(self.unmet_kwh, 3),
                                 "sessions": len(self.sessions)}
