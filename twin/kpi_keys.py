"""The summary.json keys a run of a scenario writes, known before it runs.

Assertions (and sweep KPIs) name dotted paths into summary.json; checking those names at
validation instead of after a long run needs the key set up front. The keys come from
twin.results.summarize itself, run on a dry, never-stepped stand-in for the twin holding a
1-device instance of each fleet group (so new summary keys and fleet `kpis()` appear here by
themselves; tests/test_scenario_input_kpis.py compares with a real summary.json), plus the
sections attached parts fill at run time (controller, DR events, TCL tracking, HIL), which
are open: any sub-path is accepted. CORE is the fallback should the dry call ever fail.
"""

from __future__ import annotations

import difflib
from types import SimpleNamespace

import numpy as np

# Leaf keys twin.results.summarize writes whatever the fleet (fallback only, see module doc).
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


def _tiny_fleet(group, scenario):
    """A 1-device instance of the group's fleet class (its kpis() keys are the group's)."""
    from twin.fleet import build_fleet
    from twin.params import ParamError

    tiny = group.model_copy(update={"count": 1, "record_devices": 0})
    try:
        return build_fleet(tiny, np.zeros(1, dtype=np.int64), np.random.default_rng(0), scenario)
    except ParamError:  # the group's own params are reported elsewhere; the keys are the class's
        return build_fleet(tiny.model_copy(update={"params": {}}), np.zeros(1, dtype=np.int64),
                           np.random.default_rng(0), scenario)


def leaves(d: dict, prefix: str = "") -> set[str]:
    """Dotted paths of a nested dict's leaves (a non-empty dict is not a leaf)."""
    out = set()
    for k, v in d.items():
        out |= leaves(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {f"{prefix}{k}"}
    return out


def dry_summary_keys(scenario, fleets: dict) -> set[str]:
    """Leaf keys of twin.results.summarize for a twin that has not stepped (raises if the
    stand-in lacks something summarize reads: the drift test calls this directly)."""
    from twin.results import summarize

    dt = scenario.device_step_s
    dry = SimpleNamespace(
        scenario=scenario, fleets=fleets, recorder=SimpleNamespace(cols={}), dt_s=dt,
        rec_every=max(1, round(scenario.outputs.timeseries_every_s / dt)), step_index=0,
        violation_by_kind={}, violation_intervals=0, failed_intervals=0,
        pf=SimpleNamespace(runs=0, full_runs=0), events=SimpleNamespace(of_kind=lambda kind: []),
        kpi_extra={})
    return leaves(summarize(dry, 1.0)) - {"assertions"}


def known_kpis(scenario) -> set[str]:
    """Every dotted summary.json path a run of `scenario` writes; entries ending in `.*`
    are open sections (any sub-path)."""
    fleets = {g.name: _tiny_fleet(g, scenario) for g in scenario.fleet}
    try:
        keys = dry_summary_keys(scenario, fleets)
    except Exception:  # noqa: BLE001 - a stand-in out of date must not break validation
        keys = set(CORE) | {f"energy_kwh.{f.KIND}" for f in fleets.values()}
        keys |= {f"groups.{n}.{k}" for n, f in fleets.items() for k in f.kpis()}
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
