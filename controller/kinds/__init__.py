"""Device kinds: every per-kind rule of the controller lives in one module per kind.

A kind answers, for arrays of devices of that kind (one row per device), the questions the
rest of the controller asks; nobody else knows what a battery or an EV charger is:

- `ratings`: what a device of the kind states about itself (names of its rating arrays);
- `setpoints` and `bounds(g, sp)`: the setpoints the safety gate can turn into bus
  injections and their range from the ratings;
- `dr_setpoint` and `released(g, base_set)`: the setpoint DR and emergencies steer, and
  its neutral value (what hands the device back to its owner or its schedule);
- `injection(g, sp, v, cur)` -> (requested, null) kW/kvar (load convention) and its inverse
  `setpoint_for(g, sp, inj, cur)`: what a setpoint does at the bus (the gate's model);
- `baseline_kw(g, base_set)`: what the device would draw without DR;
- `headroom_kw(g, baseline, hold_h)`: reduction it can hold for hold_h hours;
- `setpoint_for_cut(g, baseline, cut_kw)`: the value that delivers a cut;
- `shed(g, p_kw, t, default_hold_s)` -> (margin_kw, hold_s, value): its emergency shed.

`g` is anything with `.n`, `.get(name)` (telemetry, NaN where unknown or not good) and
`.rating(name, default)`: the cycle's `controller.state.GroupState` or the gate's rows of a
`GridSnapshot` (`controller.safety.state.SnapshotRows`). Adding a kind means adding a module
here and naming it in `KINDS`.
"""

from __future__ import annotations

import numpy as np

from controller.kinds.base import Kind
from controller.kinds.battery import Battery
from controller.kinds.ev import Ev
from controller.kinds.flex_load import FlexLoad
from controller.kinds.meter import Meter, Rtu
from controller.kinds.pv import Pv
from controller.kinds.tcl import Tcl

KINDS: dict[str, Kind] = {k.name: k for k in (Battery(), Pv(), Ev(), FlexLoad(), Tcl(), Meter(), Rtu())}
# kinds the per-device DR allocation and the emergency shed steer (TCL groups go through
# controller/tcl_dispatch.py, which switches units closed loop on the group's power)
DR_KINDS = tuple(k for k, v in KINDS.items() if v.dr_setpoint is not None and not v.group_dispatch)
# kinds a DR event may use
DR_ALL = tuple(k for k, v in KINDS.items() if v.dr_setpoint is not None)
# kinds the safety gate models (setpoints it can turn into injections)
CONTROLLABLE = tuple(k for k, v in KINDS.items() if v.setpoints)


def kind(name: str) -> Kind:
    """The kind called `name` (KeyError names the known ones)."""
    try:
        return KINDS[name]
    except KeyError:
        raise KeyError(f"unknown device kind {name!r}: expected one of {sorted(KINDS)}") from None


def allocate(need_kw: float, headroom: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Share `need_kw` over devices in proportion to their headroom (same fraction each), so
    losing one device costs little and the rest absorb the shortfall on the next cycle."""
    total = float(sum(h.sum() for h in headroom.values()))
    frac = 0.0 if total <= 1e-9 else min(max(need_kw, 0.0) / total, 1.0)
    return {g: frac * h for g, h in headroom.items()}


def delivered_kw(g, baseline: np.ndarray, mask: np.ndarray) -> float:
    """Metered reduction of the masked devices: baseline - measured p_kw, good values only."""
    p = g.get("p_kw")
    ok = mask & np.isfinite(p) & np.isfinite(baseline)
    return float((baseline[ok] - p[ok]).sum())


__all__ = ["CONTROLLABLE", "DR_ALL", "DR_KINDS", "KINDS", "Kind", "allocate", "delivered_kw", "kind"]
