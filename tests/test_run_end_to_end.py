"""A short scenario through the real CLI: result files, KPIs, assertions and exit codes."""

import json
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

SCENARIO = """
name: e2e
start: 2026-06-21T11:30:00Z
duration_s: 900
seed: 11
feeder: {kind: cigre_lv}
fleet:
  - {name: pv, kind: pv, count: 12, record_devices: 2, params: {p_peak_kw: 6, s_rated_kva: 6}}
  - {name: bat, kind: battery, count: 4}
outputs: {timeseries_every_s: 60}
assertions:
  - {kpi: voltage.max_pu, op: "<=", value: 1.10}
  - {kpi: energy_kwh.pv, op: "<", value: 0}
"""


def run_cli(*args):
    return subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_run_writes_all_results(tmp_path):
    sc = tmp_path / "e2e.yaml"
    sc.write_text(SCENARIO)
    r = run_cli("run", str(sc), "--out", str(tmp_path / "runs"), "--quiet")
    assert r.returncode == 0, r.stderr
    (out,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]  # plotly-*.min.js sits beside
    assert out.name.startswith("e2e-")
    for f in ["timeseries.parquet", "events.jsonl", "summary.json", "report.html"]:
        assert (out / f).stat().st_size > 0 or f == "events.jsonl", f
    ts = pq.read_table(out / "timeseries.parquet").to_pandas()
    assert len(ts) == 15  # one row per minute
    assert {"head_p_kw", "v_min_pu", "pv.p_kw", "bat.soc_kwh", "pv[1].p_kw"} <= set(ts.columns)
    assert len([c for c in ts.columns if c.startswith("v_pu.bus")]) == 44  # every CIGRE LV bus
    s = json.loads((out / "summary.json").read_text())
    assert s["device_steps"] == 900 and s["power_flows"] == 15
    # energy balance of the integrated KPIs: head = loads + own sgens + DER + losses
    e = s["energy_kwh"]
    assert abs(e["head_import"] - (e["base_load"] + e["feeder_sgen"] + e["pv"] + e["battery"]
                                   + e["losses"])) < 0.05 * abs(e["head_import"]) + 1.0
    assert all(a["passed"] for a in s["assertions"]) and len(s["assertions"]) == 2
    assert "plotly" in (out / "report.html").read_text()[:5_000_000].lower()


def test_failed_assertion_exits_1_and_names_it(tmp_path):
    sc = tmp_path / "e2e.yaml"
    sc.write_text(SCENARIO.replace('op: "<", value: 0', 'op: ">", value: 0'))
    r = run_cli("run", str(sc), "--out", str(tmp_path / "runs"), "--quiet")
    assert r.returncode == 1
    assert "ASSERTION FAILED: energy_kwh.pv > 0.0" in r.stderr


def test_feeders_lists_builtins():
    r = run_cli("feeders")
    assert r.returncode == 0
    for k in ["cigre_mv", "cigre_lv", "simbench", "pandapower_json"]:
        assert k in r.stdout


def test_managed_overvoltage_scenario_asserts_the_gate_value(tmp_path):
    """scenarios/pv_overvoltage_managed.yaml: its assertions pass with the controller's safety
    gate and volt/VAR, and fail when the same controller runs with the gate off."""
    from hil.runner import run_scenario
    from scenarios.load import load_scenario

    s = load_scenario(ROOT / "scenarios/pv_overvoltage_managed.yaml")
    gated, _ = run_scenario(s, out_root=tmp_path / "on", quiet=True)
    assert all(a["passed"] for a in gated["assertions"]), gated["assertions"]
    s.controller.safety_gate = False
    ungated, _ = run_scenario(s, out_root=tmp_path / "off", quiet=True)
    failed = {a["kpi"] for a in ungated["assertions"] if not a["passed"]}
    assert failed == {"voltage.max_pu", "violations.minutes"}
    assert ungated["voltage"]["max_pu"] > gated["voltage"]["max_pu"] + 0.01
