"""A TCL population as a virtual battery (Hao, Sanandaji, Poolla, Vincent, IEEE TPWRS 2015).

Per device: dT/dt = a*(T_out - T) - b*on*mode, on in {0,1}, electric power P when on. Holding
T at its setpoint takes the baseline power P0 = P * a*mode*(T_out - T_set)/b. Moving T across
its band [lower, upper] stores or releases (upper - lower) * P/b kW*s of electric energy. The
aggregate is then  de/dt = u - alpha*(e - e_mid),  u = p - P0,  0 <= p <= sum(P),
0 <= e <= sum((upper-lower) * P/b)  (e: energy "stored" as coolth, kWh).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class VirtualBattery:
    a_per_s: np.ndarray
    b_c_per_s: np.ndarray
    p_rated_kw: np.ndarray
    t_set_c: np.ndarray
    lower_c: np.ndarray
    upper_c: np.ndarray
    mode: np.ndarray

    @classmethod
    def from_estimate(cls, est, t_set_c) -> VirtualBattery:
        """From an `EtpEstimate` (identified from telemetry) and the reported setpoints."""
        return cls(est.a_per_s, est.b_c_per_s, est.p_rated_kw, np.asarray(t_set_c, float),
                   est.lower_c, est.upper_c, est.mode)

    # --- parameters -------------------------------------------------------------------------
    def p0_kw_per_device(self, t_out_c: float) -> np.ndarray:
        duty = self.mode * self.a_per_s * (t_out_c - self.t_set_c) / self.b_c_per_s
        return self.p_rated_kw * np.clip(duty, 0.0, 1.0)

    def baseline_kw(self, t_out_c) -> np.ndarray | float:
        """Aggregate baseline power at outdoor temperature(s) t_out_c."""
        t = np.atleast_1d(np.asarray(t_out_c, dtype=float))
        out = np.array([self.p0_kw_per_device(x).sum() for x in t])
        return float(out[0]) if np.ndim(t_out_c) == 0 else out

    @property
    def p_max_kw(self) -> float:
        return float(self.p_rated_kw.sum())

    @property
    def e_max_kwh(self) -> float:
        return float(np.sum((self.upper_c - self.lower_c) * self.p_rated_kw / self.b_c_per_s) / 3600.0)

    @property
    def alpha_per_s(self) -> float:
        """Energy-weighted self-discharge rate of the aggregate."""
        w = (self.upper_c - self.lower_c) * self.p_rated_kw / self.b_c_per_s
        return float(np.sum(w * self.a_per_s) / np.sum(w))

    def energy_kwh(self, t_in_c, clip: bool = True) -> float:
        """Stored energy now: how far each device is from its 'needs cooling' edge. Clipped to
        each device's band (a device outside it offers nothing); unclipped it is the linear
        state the dynamics in `simulate` describe."""
        edge = np.where(self.mode > 0, self.upper_c, self.lower_c)
        e = self.mode * (edge - np.asarray(t_in_c, float)) * self.p_rated_kw / self.b_c_per_s
        if clip:
            e = np.clip(e, 0.0, (self.upper_c - self.lower_c) * self.p_rated_kw / self.b_c_per_s)
        return float(np.sum(e) / 3600.0)

    # --- flexibility over a horizon --------------------------------------------------------
    def bounds(self, t_out_forecast_c, dt_s: float) -> dict[str, np.ndarray]:
        """Power and energy bounds per forecast interval: the flexibility offered upstream.

        p_up_kw / p_down_kw: how far consumption can rise above / fall below the baseline;
        e_min_kwh / e_max_kwh: the energy window the cumulative deviation must stay inside
        (from a half-charged battery, so the window is symmetric about zero).
        """
        p0 = np.asarray(self.baseline_kw(np.asarray(t_out_forecast_c, float)), dtype=float)
        e = self.e_max_kwh
        n = p0.size
        return {"t_s": np.arange(n) * dt_s, "p_base_kw": p0, "p_min_kw": np.zeros(n),
                "p_max_kw": np.full(n, self.p_max_kw), "p_up_kw": self.p_max_kw - p0,
                "p_down_kw": p0, "e_min_kwh": np.full(n, -e / 2.0), "e_max_kwh": np.full(n, e / 2.0)}

    def simulate(self, p_kw, t_out_c, dt_s: float, e0_kwh: float) -> np.ndarray:
        """Energy trajectory (kWh) the virtual battery predicts for a power profile."""
        p = np.asarray(p_kw, float)
        t_out = np.broadcast_to(np.asarray(t_out_c, float), p.shape)
        p0 = np.asarray(self.baseline_kw(t_out), dtype=float)
        e = np.empty(p.size + 1)
        e[0] = e0_kwh
        mid = self.e_max_kwh / 2.0
        k = np.exp(-self.alpha_per_s * dt_s)
        for i in range(p.size):
            # exact for constant input: relaxes towards mid + u/alpha
            target = mid + (p[i] - p0[i]) / 3600.0 / self.alpha_per_s
            e[i + 1] = target + (e[i] - target) * k
        return e
