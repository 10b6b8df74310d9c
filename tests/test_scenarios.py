"""Scenario files: the shipped ones validate, bad ones give one-line errors with exit code 2."""

import subprocess
import sys
from pathlib import Path

import pytest
from scenario_input import TINY

from scenarios.load import ScenarioError, load_scenario

ROOT = Path(__file__).resolve().parent.parent
SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml"))
SHIPPED_HIL = sorted((ROOT / "scenarios" / "hil").glob("*.yaml"))

GOOD = TINY  # the smallest valid scenario, shared with the input-hardening tests


def test_shipped_scenarios_validate():
    """Every shipped scenario passes the full check `gridtwin validate` does (feeder, fleets,
    CSV inputs, assertion KPI names), not only the model."""
    from twin.preflight import check_scenario

    assert len(SHIPPED) >= 3 and len(SHIPPED_HIL) >= 3
    for path in SHIPPED + SHIPPED_HIL:
        s = load_scenario(path)
        assert s.duration_s > 0 and s.feeder.kind
        assert check_scenario(s).n_buses > 0


@pytest.mark.parametrize("mutation, key, expected", [
    (("duration_s: 600", "duration_s: -5"), "duration_s", "greater than 0"),
    (("kind: cigre_mv", "kind: cigre_hv"), "feeder.kind", "cigre_mv"),
    (("count: 5", "count: many"), "fleet[0].count", "valid integer"),
    (("kind: pv", "kind: pv, colour: red"), "fleet[0].colour", "Extra inputs are not permitted"),
    (("start: 2026-06-21T10:00:00Z", "start: yesterday"), "start", "datetime"),
    # a mapping for a union of a literal and a model: the model's own reason, not "expected 'emulated'"
    (("count: 5", "count: 5, endpoint: {host: 127.0.0.2, port: 1502, unit: 1, map: sunspec_pv, "
                  "secure: {gateway: '10.0.0.1:7700', key_file: a.pem, gateway_pubkey_file: b.pub}}"),
     "fleet[0].endpoint.secure.gateway", "loopback"),
])
def test_bad_scenario_one_line_error(tmp_path, mutation, key, expected):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace(*mutation))
    with pytest.raises(ScenarioError) as e:
        load_scenario(bad)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"{bad}: {key}:"), msg
    assert expected in msg


def test_distribution_errors_name_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("count: 5}", "count: 5, params: {p_peak_kw: {dist: uniform, low: 9, high: 2}}}"))
    with pytest.raises(ScenarioError, match=r"fleet\[0\]\.params\.p_peak_kw.*high \(2.0\) must be >= low"):
        load_scenario(bad)


def test_yaml_syntax_error_names_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nfeeder: {kind: cigre_mv\n")
    with pytest.raises(ScenarioError, match=r"bad.yaml: line \d+"):
        load_scenario(bad)


def test_cli_exit_code_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("kind: cigre_mv", "kind: simbench"))
    r = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), "validate", str(bad)],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in r.stderr
    assert "feeder" in err[0] and "code" in err[0]


def test_unknown_fleet_param_is_user_error(tmp_path):
    from twin.fleet import ParamError
    from twin.simulation import Twin

    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("count: 5}", "count: 5, params: {p_peek_kw: 3}}"))
    with pytest.raises(ParamError, match=r"fleet 'pv'.*unknown params \['p_peek_kw'\]"):
        Twin(load_scenario(bad))


def test_schema_is_current():
    import json

    from scenarios.model import Scenario

    on_disk = json.loads((ROOT / "scenarios" / "schema.json").read_text())
    assert on_disk == Scenario.model_json_schema(), "run: gridtwin schema"
