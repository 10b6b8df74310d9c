"""twin.kpi_keys.known_kpis matches the summary.json a real run writes, so assertion names
(and sweep KPI names) checked at validation cannot drift from twin.results."""

import json

from scenario_input import gridtwin, write

SCENARIO = """\
name: kpi_keys
start: 2026-06-21T12:00:00Z
duration_s: 300
device_step_s: 5
seed: 3
feeder: {kind: cigre_mv}
fleet:
  - {name: pv, kind: pv, count: 3}
  - {name: bat, kind: battery, count: 2}
  - {name: ev, kind: ev, count: 2}
  - {name: ac, kind: tcl, count: 4}
  - {name: flex, kind: flex_load, count: 2}
outputs: {report: false}
assertions:
  - {kpi: groups.ac.lockout_violations, op: ">=", value: 0}
"""


def test_known_kpis_equal_a_real_summary(capsys, tmp_path):
    from scenarios.load import load_scenario
    from twin.kpi_keys import _tiny_fleet, dry_summary_keys, known_kpis, leaves

    path = write(tmp_path, SCENARIO, "kpi.yaml")
    rc, _, err = gridtwin(capsys, "run", path, "--out", tmp_path / "runs", "--quiet")
    assert rc == 0, err
    (summary_file,) = (tmp_path / "runs").glob("*/summary.json")
    written = leaves(json.loads(summary_file.read_text())) - {"assertions"}
    written = {k for k in written if not k.startswith("assertions")}
    s = load_scenario(path)
    dry = dry_summary_keys(s, {g.name: _tiny_fleet(g, s) for g in s.fleet})  # no fallback here
    known = known_kpis(s)
    plain = {k for k in known if not k.endswith(".*")}
    assert dry == plain
    assert written - plain == set(), "summary.json keys the dry summary in twin/kpi_keys.py misses"
    assert plain - written == set(), "twin.kpi_keys lists keys the run does not write"


def test_open_sections_follow_the_scenario(tmp_path):
    from scenarios.load import load_scenario
    from twin.kpi_keys import known_kpis, kpi_problem

    s = load_scenario(write(tmp_path, SCENARIO, "kpi.yaml"))
    keys = known_kpis(s)
    assert {"hil.*", "links.*"} <= keys and "controller.*" not in keys and "tcl_tracking.*" not in keys
    assert kpi_problem("groups.ac.comfort_degree_minutes", s, keys) is None
    assert kpi_problem("hil.controller_restarts", s, keys) is None
    assert "controller" in kpi_problem("controller.cycles", s, keys)
