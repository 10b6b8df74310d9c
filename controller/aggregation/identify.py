"""Online identification of per-device first-order thermal models from telemetry.

Each device obeys dT/dt = a*(T_out - T) - b*on (a = 1/(R*C) per second, b = COP*P/C in
degC/s). Between two samples with an unchanged on-state the temperature slope is regressed on
(T_out - T_mid, -on); the 2x2 normal equations are accumulated per device, so memory is O(n)
however long the identification runs. Switching events give the thermostat band edges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class EtpEstimate:
    """Identified parameters per device (NaN rows were filled with the population median)."""

    a_per_s: np.ndarray  # 1/(R*C)
    b_c_per_s: np.ndarray  # temperature slope of the compressor when on (COP*P/C)
    p_rated_kw: np.ndarray  # electric power when on
    lower_c: np.ndarray  # thermostat band edges seen at switching events
    upper_c: np.ndarray
    mode: np.ndarray  # +1 cooling, -1 heating
    identified: np.ndarray  # bool: the device's own data determined a and b

    @property
    def tau_s(self) -> np.ndarray:
        return 1.0 / self.a_per_s

    @property
    def gain_c(self) -> np.ndarray:
        """R*COP*P: how far below outdoor temperature the device holds the room when always on."""
        return self.b_c_per_s / self.a_per_s


class EtpIdentifier:
    """Feed `update()` with every telemetry sample; `estimate()` solves for all devices."""

    def __init__(self, n: int):
        self.n = n
        self.s = np.zeros((5, n))  # S11, S12, S22, S1y, S2y
        self.count = np.zeros(n, dtype=np.int64)
        self.p_max_kw = np.zeros(n)
        self.up_sum = np.zeros(n)  # temperature sum at off->on events
        self.up_n = np.zeros(n)
        self.lo_sum = np.zeros(n)  # at on->off events
        self.lo_n = np.zeros(n)
        self._prev = None

    def update(self, t_s: float, t_in_c, on, p_kw, t_out_c: float) -> None:
        t_in = np.asarray(t_in_c, dtype=float)
        on_now = np.asarray(on).astype(bool)
        self.p_max_kw = np.maximum(self.p_max_kw, np.asarray(p_kw, dtype=float))
        if self._prev is not None:
            t0, temp0, on0, tout0 = self._prev
            dt = t_s - t0
            if dt > 0:
                same = on0 == on_now
                x1 = np.where(same, 0.5 * (tout0 + t_out_c) - 0.5 * (temp0 + t_in), 0.0)
                x2 = np.where(same, -on_now.astype(float), 0.0)
                y = np.where(same, (t_in - temp0) / dt, 0.0)
                self.s[0] += x1 * x1
                self.s[1] += x1 * x2
                self.s[2] += x2 * x2
                self.s[3] += x1 * y
                self.s[4] += x2 * y
                self.count += same
                went_on = ~on0 & on_now
                went_off = on0 & ~on_now
                self.up_sum += np.where(went_on, temp0, 0.0)
                self.up_n += went_on
                self.lo_sum += np.where(went_off, temp0, 0.0)
                self.lo_n += went_off
        self._prev = (t_s, t_in.copy(), on_now.copy(), float(t_out_c))

    def estimate(self, t_set_c=None) -> EtpEstimate:
        s11, s12, s22, s1y, s2y = self.s
        det = s11 * s22 - s12 * s12
        ok = (det > 1e-12 * np.maximum(s11 * s22, 1e-300)) & (s22 > 0) & (self.count >= 10)
        with np.errstate(divide="ignore", invalid="ignore"):
            a = np.where(ok, (s22 * s1y - s12 * s2y) / det, np.nan)
            b = np.where(ok, (s11 * s2y - s12 * s1y) / det, np.nan)
        ok &= np.isfinite(a) & (a > 0) & np.isfinite(b) & (b != 0)
        a = np.where(ok, a, np.nan)
        b = np.where(ok, b, np.nan)
        mode = np.where(np.nan_to_num(b, nan=np.nanmedian(b) if ok.any() else 1.0) >= 0, 1.0, -1.0)
        fill_a = float(np.nanmedian(a)) if ok.any() else np.nan
        fill_b = float(np.nanmedian(np.abs(b))) if ok.any() else np.nan
        a = np.where(ok, a, fill_a)
        b = np.where(ok, np.abs(b), fill_b)
        with np.errstate(invalid="ignore", divide="ignore"):
            upper = self.up_sum / self.up_n
            lower = self.lo_sum / self.lo_n
        # heating devices switch on at the cold edge: swap the roles
        upper, lower = np.where(mode > 0, upper, lower), np.where(mode > 0, lower, upper)
        half = np.nanmedian(upper - lower) / 2.0 if np.isfinite(upper - lower).any() else 0.25
        centre = (np.asarray(t_set_c, dtype=float) if t_set_c is not None
                  else np.where(np.isfinite(upper + lower), (upper + lower) / 2.0, np.nan))
        upper = np.where(np.isfinite(upper), upper, centre + half)
        lower = np.where(np.isfinite(lower), lower, centre - half)
        return EtpEstimate(a, b, self.p_max_kw.copy(), lower, upper, mode, ok)
