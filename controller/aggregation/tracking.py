"""Priority-stack switching: make a TCL population track an aggregate power reference.

Each cycle the error between the reference and the power expected at the next measurement
(measured now, plus the thermostat switchings the identified models predict) is closed by
switching whole devices: the warmest idle ones on when power is short, the coolest running
ones off when it is in excess (for cooling; mirrored for heating). Only devices strictly
inside their thermostat band and past their lockout (as the controller itself saw them
switch) are used, so comfort bands hold and no lockout is ever overridden. A switch is a
one-cycle `force` pulse: once released the thermostat's own hysteresis keeps the new state.
"""

from __future__ import annotations

import numpy as np

from controller.commands import Command


class PriorityStackTracker:
    def __init__(self, p_rated_kw, lower_c, upper_c, mode, a_per_s, b_c_per_s,
                 lockout_s: float = 300.0, edge_margin: float = 0.05):
        self.p_rated_kw = np.asarray(p_rated_kw, float)
        self.lower = np.asarray(lower_c, float)
        self.width = np.maximum(np.asarray(upper_c, float) - self.lower, 1e-6)
        self.mode = np.asarray(mode, float)
        self.a = np.asarray(a_per_s, float)
        self.b = np.asarray(b_c_per_s, float)
        self.lockout_s = float(lockout_s)
        self.margin = float(edge_margin)
        self.n = self.lower.size
        self.last_switch_s = np.full(self.n, np.nan)  # unknown until seen
        self._first_seen_s = None
        self._prev_on = None
        self.forced = np.zeros(self.n, dtype=bool)

    def position(self, t_in_c) -> np.ndarray:
        """0 at the 'switch off' edge, 1 at the 'switch on' edge of each device's band."""
        x = (np.asarray(t_in_c, float) - self.lower) / self.width
        return np.where(self.mode > 0, x, 1.0 - x)

    def observe(self, t_s: float, on) -> None:
        """Track switching times from on/off telemetry (the controller's lockout clock)."""
        on = np.asarray(on).astype(bool)
        if self._prev_on is None:
            self._first_seen_s = t_s
        else:
            self.last_switch_s[on != self._prev_on] = t_s
        self._prev_on = on.copy()

    def unlocked(self, t_s: float) -> np.ndarray:
        since = np.where(np.isnan(self.last_switch_s), t_s - self._first_seen_s,
                         t_s - self.last_switch_s)
        return since >= self.lockout_s

    def natural_switch_kw(self, t_in_c, on, t_out_c: float, horizon_s: float, t_s: float) -> float:
        """Power change from thermostats that will reach their band edge within horizon_s."""
        x = self.position(t_in_c)
        rate = (self.a * (t_out_c - np.asarray(t_in_c, float)) * self.mode
                - self.b * np.asarray(on, float)) / self.width  # dx/dt
        x_next = x + rate * horizon_s
        free = self.unlocked(t_s)
        turn_on = ~np.asarray(on, bool) & (x_next > 1.0) & free
        turn_off = np.asarray(on, bool) & (x_next < 0.0) & free
        return float(self.p_rated_kw[turn_on].sum() - self.p_rated_kw[turn_off].sum())

    def dispatch(self, t_s: float, ref_kw: float, p_meas_kw: float, t_in_c, on, t_out_c: float,
                 horizon_s: float) -> tuple[np.ndarray, np.ndarray]:
        """(device indices, force values) to write this cycle: releases (0) of last cycle's
        pulses, then +1 / -1 pulses that close the expected error."""
        self.observe(t_s, on)
        on = np.asarray(on).astype(bool)
        expected = p_meas_kw + self.natural_switch_kw(t_in_c, on, t_out_c, horizon_s, t_s)
        err = ref_kw - expected
        x = self.position(t_in_c)
        free = self.unlocked(t_s)
        inside = (x > self.margin) & (x < 1.0 - self.margin)
        if err > 0:
            cand = np.flatnonzero(~on & free & inside)
            order = cand[np.argsort(-x[cand])]  # warmest first (closest to wanting on)
            value = 1.0
        else:
            cand = np.flatnonzero(on & free & inside)
            order = cand[np.argsort(x[cand])]  # coolest first
            value = -1.0
        cum = np.cumsum(self.p_rated_kw[order])
        # switch the prefix whose cumulative power lands closest to |err|
        k = int(np.searchsorted(cum, abs(err)))
        if k < cum.size and (k == 0 or cum[k] - abs(err) < abs(err) - cum[k - 1]):
            k += 1
        chosen = order[:k]
        release = np.flatnonzero(self.forced)
        release = release[~np.isin(release, chosen)]
        self.forced[:] = False
        self.forced[chosen] = True
        idx = np.concatenate([release, chosen]).astype(np.int64)
        val = np.concatenate([np.zeros(release.size), np.full(chosen.size, value)])
        return idx, val


def to_commands(group: str, idx, values, setpoint: str = "force", reason: str = "tcl tracking"):
    """Commands for a device link (one per device; use arrays directly for large groups)."""
    return [Command(f"{group}/{int(i)}", setpoint, float(v), source="tcl", reason=reason)
            for i, v in zip(idx, values)]
