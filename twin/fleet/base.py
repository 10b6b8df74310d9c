"""The contract every DER fleet class keeps: struct-of-arrays, one row per device.

A fleet owns its parameter arrays, its state arrays and its setpoint arrays. The run loop
calls `step` once per device step; emulators and links read `telemetry()` and call
`write()` for setpoints, which validates against each device's limits.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numba import njit


@dataclass
class Ambient:
    """Exogenous conditions at one instant (from the scenario weather)."""

    t_s: float  # seconds since scenario start
    ghi_w_m2: float
    t_out_c: float
    hour_of_day: float
    wind_m_s: float = float("nan")  # wind speed at hub height (NaN: the scenario has none)


@dataclass
class Ambients:
    """Exogenous conditions at k consecutive device steps (one batch), as arrays; the local hour
    is computed only if a fleet asks for it. Iterating gives one `Ambient` per step."""

    t_s: np.ndarray
    ghi_w_m2: np.ndarray
    t_out_c: np.ndarray
    wind_m_s: np.ndarray
    hours_at: Callable[[np.ndarray], np.ndarray]  # t_s -> local clock hour of day, element-wise

    def __len__(self) -> int:
        return len(self.t_s)

    @cached_property
    def hour_of_day(self) -> np.ndarray:
        return np.asarray(self.hours_at(self.t_s), float)

    def __getitem__(self, j: int) -> Ambient:
        return Ambient(float(self.t_s[j]), float(self.ghi_w_m2[j]), float(self.t_out_c[j]),
                       float(self.hour_of_day[j]), float(self.wind_m_s[j]))

    def __iter__(self):
        return (self[j] for j in range(len(self)))

    @classmethod
    def of(cls, amb: Ambient) -> Ambients:
        """One step as a batch of one (fleets step with the batch kernel)."""
        a = cls(np.array([amb.t_s]), np.array([amb.ghi_w_m2]), np.array([amb.t_out_c]),
                np.array([amb.wind_m_s]), lambda t: np.full(len(t), amb.hour_of_day))
        a.hour_of_day = np.array([amb.hour_of_day])
        return a


def _at(bound, i: int) -> float:
    """Row i of a per-device bound (an array, or one number for every device)."""
    return float(bound[i] if np.ndim(bound) else bound)


class SetpointError(ValueError):
    """A setpoint outside the device's limits; devices answer it with an exception (Modbus 03)."""


@njit(cache=True)
def integrate_steps(total: float, step_sums: np.ndarray, dt_s: float) -> float:
    """total + each step's sum x dt in order: what k calls of `Fleet.integrate` add up to."""
    for x in step_sums:
        total += x * dt_s / 3600.0
    return total


class Fleet:
    """Base class: subclasses set KIND, SETPOINTS and implement `step`."""

    KIND = "base"
    # setpoint name -> (array attribute holding the per-device lower bound or a float,
    #                   ... upper bound); resolved by `limits()`
    SETPOINTS: dict[str, tuple] = {}

    def __init__(self, name: str, bus: np.ndarray):
        self.name = name
        self.bus = np.asarray(bus, dtype=np.int64)
        self.n = len(self.bus)
        self.p_kw = np.zeros(self.n)  # load convention: + consumption, - generation
        self.q_kvar = np.zeros(self.n)
        self.available = np.ones(self.n, dtype=bool)  # False: device offline (fault/comm loss)
        self.energy_kwh = 0.0  # integrated sum of p_kw over the run

    # --- physics ------------------------------------------------------------------------
    def step(self, dt_s: float, amb: Ambient) -> None:
        raise NotImplementedError

    def integrate(self, dt_s: float) -> None:
        self.energy_kwh += float(self.p_kw.sum()) * dt_s / 3600.0

    def advance(self, dt_s: float, ambs: Ambients) -> None:
        """Several device steps in a row with nothing discrete in between (the twin batches
        the steps between power flows, samples and events): state as after k `step` +
        `integrate` calls. Default: exactly that; fleets with a batch kernel override it."""
        for amb in ambs:
            self.step(dt_s, amb)
            self.integrate(dt_s)

    # --- setpoints ------------------------------------------------------------------------
    def limits(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        if name not in self.SETPOINTS:
            raise SetpointError(f"{self.name}: unknown setpoint {name!r}; known: {sorted(self.SETPOINTS)}")
        lo, hi = self.SETPOINTS[name]
        lo = getattr(self, lo) if isinstance(lo, str) else np.full(self.n, float(lo))
        hi = getattr(self, hi) if isinstance(hi, str) else np.full(self.n, float(hi))
        return np.broadcast_to(lo, (self.n,)), np.broadcast_to(hi, (self.n,))

    def write(self, name: str, index, value) -> None:
        """Set setpoint `name` for rows `index` (int, slice or array); reject out-of-range values."""
        if isinstance(index, int | np.integer) and np.ndim(value) == 0:
            return self._write_one(name, int(index), float(value))
        lo, hi = self.limits(name)
        idx = np.arange(self.n)[index]
        val = np.broadcast_to(np.asarray(value, dtype=float), np.shape(idx))
        bad = ~np.isfinite(val) | (val < lo[idx] - 1e-9) | (val > hi[idx] + 1e-9)
        if np.any(bad):
            k = int(np.flatnonzero(np.atleast_1d(bad))[0])
            i = int(np.atleast_1d(idx)[k])
            raise SetpointError(f"{self.name}[{i}].{name}={float(np.atleast_1d(val)[k]):g} outside "
                                f"[{lo[i]:g}, {hi[i]:g}]")
        getattr(self, name)[idx] = val

    def _write_one(self, name: str, i: int, v: float) -> None:
        """`write` for one device and one value (what a link sends per command), without
        building whole-fleet index and bound arrays: the same checks and message."""
        if name not in self.SETPOINTS:
            self.limits(name)  # raises the unknown-setpoint error
        i = range(self.n)[i]  # IndexError for a row out of range, negatives counted from the end
        lo, hi = (float(b) if not isinstance(b, str) else _at(getattr(self, b), i) for b in self.SETPOINTS[name])
        if not (math.isfinite(v) and lo - 1e-9 <= v <= hi + 1e-9):
            raise SetpointError(f"{self.name}[{i}].{name}={v:g} outside [{lo:g}, {hi:g}]")
        getattr(self, name)[i] = v

    # --- views ----------------------------------------------------------------------------
    def telemetry(self) -> dict[str, np.ndarray]:
        """Measured per-device quantities a real device would report (names with units)."""
        return {"p_kw": self.p_kw, "q_kvar": self.q_kvar}

    def aggregates(self) -> dict[str, float]:
        """Per-class sums recorded in the timeseries (column prefix = group name)."""
        return {"p_kw": float(self.p_kw.sum()), "q_kvar": float(self.q_kvar.sum())}

    def kpis(self) -> dict:
        return {"kind": self.KIND, "count": self.n, "energy_kwh": round(self.energy_kwh, 3)}
