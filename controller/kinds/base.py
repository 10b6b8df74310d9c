"""The device-kind protocol (see controller/kinds/__init__.py) with neutral defaults: a kind
that is not steered (meter, RTU) needs nothing but its name."""

from __future__ import annotations

import numpy as np


class Kind:
    name: str = ""
    ratings: tuple[str, ...] = ()  # what a device of this kind states about itself
    setpoints: tuple[str, ...] = ()  # setpoints the gate turns into injections
    q_setpoint = "q_set_kvar"  # the reactive-power axis (when in `setpoints`)
    dr_setpoint: str | None = None  # what DR and the emergency shed steer (None: not a resource)
    group_dispatch = False  # DR/emergency act on the group (TCL switching law), not per device
    rating_kw = "p_max_kw"  # rating that sizes ramps (kW)
    ramp_frac_per_s: float | None = None  # the gate's default ramp limit, share of rating_kw per s
    response_s = float("inf")  # time to reach a new setpoint (emergency order)
    shed_order = 9  # among equal response times, who is shed first
    restore_rank = 9  # order of the staged restore after an emergency
    restore_late = True  # restored at the end of the restore spread (else at once)
    all_or_nothing: tuple[str, ...] = ()  # on/off setpoints: kept whole or rejected

    # --- the gate's device model --------------------------------------------------------------
    def size_kw(self, g) -> np.ndarray:
        """The rating that sizes ramps (inf where unknown)."""
        r = g.rating(self.rating_kw)
        return np.where(np.isfinite(r), r, np.inf)

    def bounds(self, g, sp: str) -> tuple[np.ndarray, np.ndarray]:
        """Allowed range of setpoint `sp` per device (inf where unbounded)."""
        if sp == self.q_setpoint:
            q = self.q_max_kvar(g)
            return -q, q
        return np.full(g.n, -np.inf), np.full(g.n, np.inf)

    def q_max_kvar(self, g) -> np.ndarray:
        q = g.rating("q_max_kvar")
        alt = g.rating("p_max_kw")
        return np.where(np.isfinite(q), q, np.where(np.isfinite(alt), alt, np.inf))

    def injection(self, g, sp: str, v: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(requested, null) injection (kW or kvar, load +) of setpoint values v; `null` is what
        the setpoint's neutral value gives, toward which the gate curtails a command."""
        return np.asarray(v, float), np.zeros(g.n)

    def setpoint_for(self, g, sp: str, inj: np.ndarray, cur: np.ndarray) -> np.ndarray:
        """Inverse of `injection`: the setpoint values that yield injection `inj`."""
        return np.asarray(inj, float)

    # --- demand response and emergency -------------------------------------------------------
    def baseline_kw(self, g, base_set: np.ndarray | None = None, **_) -> np.ndarray:
        """Power each device would draw without DR (load +); NaN where unknown."""
        return g.get("p_kw")

    def headroom_kw(self, g, baseline: np.ndarray, hold_h: float) -> np.ndarray:
        """Reduction each device can hold for hold_h hours (>= 0; 0 where unusable)."""
        return np.zeros(g.n)

    def setpoint_for_cut(self, g, baseline: np.ndarray, cut_kw: np.ndarray) -> np.ndarray:
        raise ValueError(f"kind {self.name!r} offers no load reduction")

    def released(self, g, base_set: np.ndarray | None = None) -> np.ndarray:
        """The neutral value of `dr_setpoint`: the device back to its owner / its schedule."""
        return np.zeros(g.n)

    def shed(self, g, p_kw: np.ndarray, t: float, default_hold_s: float):
        """Emergency shed per device: (margin_kw, hold_s, setpoint value)."""
        raise ValueError(f"kind {self.name!r} is not shed per device")


def finite(x, default: float) -> np.ndarray:
    """x with NaN replaced by `default` (ratings a device may not state)."""
    return np.nan_to_num(np.asarray(x, float), nan=default)
