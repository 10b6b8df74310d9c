"""State-bin Markov model of a TCL population (Mathieu, Koch, Callaway, IEEE TPWRS 2013).

Each device's temperature is normalised to its own band (0: just switched off, 1: about to
switch on, for cooling) and cut into `bins`; with the on/off state that makes 2*bins states.
The transition matrix is counted from consecutive telemetry samples of every device, so it
is identified online from data, not derived from parameters. Aggregate power follows from the
share of devices in on-states.
"""

from __future__ import annotations

import numpy as np


class BinModel:
    def __init__(self, lower_c, upper_c, mode, p_rated_kw, bins: int = 20):
        self.lower = np.asarray(lower_c, float)
        self.width = np.maximum(np.asarray(upper_c, float) - self.lower, 1e-6)
        self.mode = np.asarray(mode, float)
        self.p_on_kw = float(np.mean(p_rated_kw))
        self.n_dev = self.lower.size
        self.bins = bins
        self.n_states = 2 * bins
        self.counts = np.zeros((self.n_states, self.n_states))
        self._prev = None

    def states(self, t_in_c, on) -> np.ndarray:
        """State index per device: on*bins + bin of the normalised temperature."""
        x = (np.asarray(t_in_c, float) - self.lower) / self.width
        x = np.where(self.mode > 0, x, 1.0 - x)
        b = np.clip((x * self.bins).astype(np.int64), 0, self.bins - 1)
        return np.asarray(on).astype(np.int64) * self.bins + b

    def distribution(self, t_in_c, on) -> np.ndarray:
        return np.bincount(self.states(t_in_c, on), minlength=self.n_states) / self.n_dev

    def update(self, t_in_c, on) -> None:
        """Count the transitions since the previous sample (fixed sampling interval)."""
        s = self.states(t_in_c, on)
        if self._prev is not None:
            self.counts += np.bincount(self._prev * self.n_states + s,
                                       minlength=self.n_states**2).reshape(self.n_states, -1)
        self._prev = s

    def reset_sequence(self) -> None:
        """Forget the previous sample (after a gap or a control action)."""
        self._prev = None

    def transition_matrix(self) -> np.ndarray:
        """Row-stochastic A: A[i, j] = P(state j next | state i now); unseen rows stay put."""
        rows = self.counts.sum(axis=1, keepdims=True)
        a = np.where(rows > 0, self.counts / np.maximum(rows, 1.0), 0.0)
        empty = rows[:, 0] == 0
        a[empty, np.flatnonzero(empty)] = 1.0
        return a

    def power_kw(self, dist: np.ndarray) -> float:
        return float(dist[self.bins:].sum() * self.n_dev * self.p_on_kw)

    def predict(self, dist0: np.ndarray, n_steps: int) -> np.ndarray:
        """Aggregate power for the next n_steps sampling intervals, open loop from dist0."""
        a = self.transition_matrix()
        d = np.asarray(dist0, float).copy()
        out = np.empty(n_steps)
        for k in range(n_steps):
            d = d @ a
            out[k] = self.power_kw(d)
        return out
