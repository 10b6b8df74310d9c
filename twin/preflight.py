"""Everything a run would reject, found without simulating: `gridtwin validate` and the start
of `gridtwin run` call `check_scenario`.

The model (scenarios.model) checks what one file can say about itself; this adds what needs
the product: the feeder is built (SimBench code, pandapower JSON), devices are placed on its
buses and every fleet is built with the run's own seeds (parameter names, ranges, orders),
CSV inputs are read with their content checks, and assertion KPI names are checked against
the keys the run's summary.json will have. Problems are collected, listed up to a bound, and
raised as one ScenarioError line that names the file.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from scenarios.load import MAX_ERRORS_LISTED, ScenarioError, resolve_path, source_of

SAMPLE_DEVICES = 200_000  # per group; the run draws all of them with the same rules


@dataclass
class Checked:
    """What the check built, for validate's summary line."""

    n_devices: int = 0
    n_groups: int = 0
    n_buses: int = 0
    problems: list[str] = field(default_factory=list)


def _fleet_path(msg: str, i: int, name: str) -> str:
    """'fleet 'pv': params.x: ...' (twin.params wording) as 'fleet[0].params.x: ...'."""
    head = f"fleet '{name}': "
    if msg.startswith(head):
        rest = msg[len(head):]
        if rest.startswith(("params", "placement")):
            return f"fleet[{i}].{rest}"
        return f"fleet[{i}] ({name}): {rest}"
    return f"fleet[{i}] ({name}): {msg}"


def check_scenario(scenario, source: str | None = None) -> Checked:
    """Raise ScenarioError listing what a run of `scenario` would fail on; else return a summary."""
    from grid_models.feeders import FeederError, build_feeder_cached
    from twin.csv_inputs import BASE_LOAD_COLUMNS, PRICE_COLUMNS, WEATHER_COLUMNS, read_series
    from twin.fleet import ParamError, build_fleet, place_devices
    from twin.kpi_keys import known_kpis, kpi_problem

    src = source or source_of(scenario)
    s = scenario
    out = Checked(n_devices=sum(g.count for g in s.fleet), n_groups=len(s.fleet))
    problems = out.problems
    fd = s.feeder
    try:
        net = build_feeder_cached(fd.kind, fd.code, resolve_path(s, fd.path) if fd.path else None, fd.with_der)
        out.n_buses = len(net.bus)
    except FeederError as e:
        net = None
        problems.append(str(e) if str(e).startswith("feeder") else f"feeder: {e}")
    fleet_ok = True
    for i, g in enumerate(s.fleet):
        rng = np.random.default_rng([s.seed, i])  # the run's seeds: the same draws as twin.simulation
        if g.count > SAMPLE_DEVICES:  # parameters of a huge group are checked on a sample (memory, time)
            g = g.model_copy(update={"count": SAMPLE_DEVICES})
        try:
            bus = place_devices(g, net, rng) if net is not None else np.zeros(g.count, dtype=np.int64)
            build_fleet(g, bus, rng, s)
        except ParamError as e:
            fleet_ok = False
            problems.append(_fleet_path(str(e), i, g.name))
    inputs = []
    if s.weather.kind == "csv":
        inputs.append(("weather.path", s.weather.path, WEATHER_COLUMNS, s.weather.extend))
    if s.base_load.profile == "csv":
        inputs.append(("base_load.path", s.base_load.path, BASE_LOAD_COLUMNS, s.base_load.extend))
    if s.prices.kind == "csv":
        inputs.append(("prices.path", s.prices.path, PRICE_COLUMNS, s.prices.extend))
    for key, rel, cols, extend in inputs:
        try:
            read_series(resolve_path(s, rel), cols, s.start, s.duration_s, extend)
        except ScenarioError as e:
            problems.append(f"{key}: {e}")
    if s.assertions and fleet_ok:
        keys = known_kpis(s)
        for i, a in enumerate(s.assertions):
            why = kpi_problem(a.kpi, s, keys)
            if why:
                problems.append(f"assertions[{i}].kpi: {why}")
    if problems:
        shown = problems[:MAX_ERRORS_LISTED]
        more = f"; and {len(problems) - len(shown)} more" if len(problems) > len(shown) else ""
        raise ScenarioError(f"{src}: " + "; ".join(shown) + more)
    return out
