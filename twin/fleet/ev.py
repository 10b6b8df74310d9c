"""EV chargers: sessions (arrival, departure, energy need) and a charging-rate setpoint.

Sessions are drawn per charger per day at construction; one SimPy process (not one per
charger) walks the sorted arrival/departure times and plugs vehicles in and out. A car that
arrived before the run starts plugged in with what the same rule (full rate from arrival)
would have left it to charge, as if the run had been going.
"""

from __future__ import annotations

import numpy as np

from twin.fleet.base import Ambient, Fleet
from twin.params import draw_all

DEFAULTS = {"p_max_kw": 11.0, "arrival_h_mean": 18.0, "arrival_h_std": 1.5,
            "dwell_h_mean": 12.0, "dwell_h_std": 2.0, "energy_kwh_mean": 15.0,
            "energy_kwh_std": 5.0, "eta": 0.92}
BOUNDS = {"p_max_kw": (0.0, 1000.0), "arrival_h_mean": (0.0, 24.0), "dwell_h_mean": (0.1, 72.0),
          "energy_kwh_mean": (0.0, 200.0), "eta": (0.5, 1.0)}


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

    def session_process(self, env, events):
        """SimPy process: plug vehicles in at arrival; departures are handled in `step`."""
        for dev, arr_s, dep_s, need in self.sessions:
            if arr_s > env.now:
                yield env.timeout(arr_s - env.now)
            i = int(dev)
            if self.connected[i]:
                continue  # previous session still plugged: the car did not leave, skip
            self.connected[i] = True
            self.departure_s[i] = dep_s
            if arr_s >= 0:
                self.e_need_kwh[i] = need
            else:  # arrived before the run: charged by the same rule (full rate) until t = 0
                done = self.p_max_kw[i] * self.eta[i] * (-arr_s) / 3600.0
                self.e_need_kwh[i] = max(0.0, need - done)

    def step(self, dt_s: float, amb: Ambient) -> None:
        gone = self.connected & (amb.t_s >= self.departure_s)
        if gone.any():
            self.unmet_kwh += float(self.e_need_kwh[gone].sum())
            self.connected[gone] = False
            self.e_need_kwh[gone] = 0.0
            self.departure_s[gone] = np.inf
        rate = np.minimum(self.p_max_set_kw, self.p_max_kw)
        cap = self.e_need_kwh / self.eta * 3600.0 / dt_s
        p = np.where(self.connected & self.available, np.minimum(rate, cap), 0.0)
        self.e_need_kwh = np.maximum(self.e_need_kwh - p * self.eta * dt_s / 3600.0, 0.0)
        self.p_kw = p
        self.delivered_kwh += float((p * self.eta).sum()) * dt_s / 3600.0

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
