"""The summary.json keys a run of a scenario writes, known before it runs.

Assertions (and sweep KPIs) name dotted paths into summary.json; checking those names at
validation instead of after a long run needs the key set up front. It comes from three
places: the fixed keys of twin.results.summarize (CORE, checked against a real summary.json
in tests/test_scenario_input_kpis.py so it cannot drift), the fleet classes' own `kpis()`
(asked of a tiny instance of each group), and sections attached parts fill at run time
(controller, DR events, TCL tracking, HIL), which are open: any sub-path is accepted.
"""

from __future__ import annotations

import difflib

import numpy as np

# Leaf keys of twin.results.summarize that every run writes, whatever its fleet.
CORE = frozenset({
    "scenario", "start", "duration_s", "device_steps", "power_flows", "wall_s", "speedup",
    "energy_kwh.head_import", "energy_kwh.losses", "energy_kwh.base_load", "energy_kwh.feeder_sgen",
    "voltage.min_pu", "voltage.max_pu", "loading.line_max_pct", "loading.trafo_max_pct",
    "head.p_max_kw", "head.p_min_kw",
    "violations.minutes", "violations.intervals",
    "violations.by_kind_intervals.v_low", "violations.by_kind_intervals.v_high",
    "violations.by_kind_intervals.line_overload", "violations.by_kind_intervals.trafo_overload",
    "faults",
})
# Written by parts attached to the run; their inner keys depend on what happened.
OPEN_ALWAYS = ("hil", "links")  # `gridtwin hil` runs
OPEN_WITH_CONTROLLER = ("controller", "dr_tcl")
OPEN_WITH_REGULATION = ("tcl_tracking",)


def _group_kpi_keys(group, scenario) -> set[str]:
    """Keys of `groups.<name>` as the fleet class reports them (a 1-device copy is enough)."""
    from twin.fleet import build_fleet

    from twin.params import ParamError

    tiny = group.model_copy(update={"count": 1, "record_devices": 0})
    try:
        fleet = build_fleet(tiny, np.zeros(1, dtype=np.int64), np.random.default_rng(0), scenario)
    except ParamError:  # the group's own params are reported elsewhere; the keys are the class's
        fleet = build_fleet(tiny.model_copy(update={"params": {}}), np.zeros(1, dtype=np.int64),
                            np.random.default_rng(0), scenario)
    return set(fleet.kpis())


def known_kpis(scenario) -> set[str]:
    """Every dotted summary.json path a run of `scenario` writes; entries ending in `.*`
    are open sections (any sub-path). Raises twin.fleet.ParamError for invalid fleet params."""
    keys = set(CORE)
    kinds = set()
    for g in scenario.fleet:
        kinds.add(g.kind)
        keys |= {f"groups.{g.name}.{k}" for k in _group_kpi_keys(g, scenario)}
    keys |= {f"energy_kwh.{k}" for k in kinds}
    keys |= {f"{s}.*" for s in OPEN_ALWAYS}
    if scenario.controller.enabled:
        keys |= {f"{s}.*" for s in OPEN_WITH_CONTROLLER}
        keys |= {f"dr.{ev.id}.*" for ev in scenario.dr_events}
    if getattr(scenario, "regulation", None) is not None:
        keys |= {f"{s}.*" for s in OPEN_WITH_REGULATION}
    return keys


def is_known(name: str, keys: set[str]) -> bool:
    if name in keys:
        return True
    return any(k.endswith(".*") and name.startswith(k[:-1]) and len(name) > len(k) - 1 for k in keys)


def kpi_problem(name: str, scenario, keys: set[str] | None = None) -> str | None:
    """None when `name` is a KPI a run of `scenario` writes; else why not, listing valid ones."""
    keys = known_kpis(scenario) if keys is None else keys
    if is_known(name, keys):
        return None
    plain = sorted(k for k in keys if not k.endswith(".*"))
    close = difflib.get_close_matches(name, plain, n=3, cutoff=0.6)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    head = name.split(".")[0]
    same = [k for k in sorted(keys) if k.split(".")[0] == head]
    listing = same if same else sorted({k.split(".")[0] + (".…" if "." in k else "") for k in keys})
    shown = ", ".join(listing[:25]) + (", …" if len(listing) > 25 else "")
    if name.startswith("dr.") and not scenario.controller.enabled:
        return f"{name!r} is written only when controller.enabled is true; {hint}valid: {shown}"
    return f"{name!r} is not a KPI this scenario writes; {hint}valid: {shown}"
