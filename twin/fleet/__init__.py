"""DER fleet classes, one struct-of-arrays class per device kind."""

from __future__ import annotations

import numpy as np

from twin.fleet.base import Ambient, Fleet, SetpointError
from twin.params import ParamError

__all__ = ["Ambient", "Fleet", "ParamError", "SetpointError", "build_fleet", "place_devices"]


def place_devices(group, net, rng: np.random.Generator) -> np.ndarray:
    """Bus index per device by the group's placement rule, spread evenly in seeded order."""
    from grid_models.feeders import load_buses, lv_buses

    rule = group.placement.rule
    if rule == "buses":
        cand = list(group.placement.buses)
        unknown = [b for b in cand if b not in net.bus.index]
        if unknown:
            raise ParamError(f"fleet '{group.name}': placement.buses: unknown bus {unknown[0]}")
    elif rule == "all_buses":
        head = set(int(b) for b in net.ext_grid.bus)
        cand = [int(b) for b in net.bus.index if int(b) not in head]
    elif rule == "lv_buses":
        cand = lv_buses(net)
    else:
        cand = load_buses(net)
    if not cand:
        raise ParamError(f"fleet '{group.name}': placement rule {rule!r} finds no bus on this feeder")
    cand = np.asarray(cand, dtype=np.int64)[rng.permutation(len(cand))]
    return cand[np.arange(group.count) % len(cand)]


def build_fleet(group, bus, rng, scenario) -> Fleet:
    """Instantiate the fleet class for `group.kind`."""
    from twin.profiles import LocalClock

    # EV arrival hours are local clock time (scenario timezone)
    start_hour = LocalClock(scenario.start, getattr(scenario, "timezone", "UTC")).hour(0.0)
    if group.kind == "pv":
        from twin.fleet.pv import PvFleet
        return PvFleet(group, bus, rng)
    if group.kind == "battery":
        from twin.fleet.battery import BatteryFleet
        return BatteryFleet(group, bus, rng)
    if group.kind == "ev":
        from twin.fleet.ev import EvFleet
        return EvFleet(group, bus, rng, start_hour, scenario.duration_s)
    if group.kind == "flex_load":
        from twin.fleet.flex_load import FlexLoadFleet
        return FlexLoadFleet(group, bus, rng, scenario.base_load.profile
                             if scenario.base_load.profile != "csv" else "flat")
    if group.kind == "tcl":
        from twin.fleet.tcl import TclFleet
        return TclFleet(group, bus, rng, scenario)
    raise ParamError(f"fleet '{group.name}': unknown kind {group.kind!r}")
