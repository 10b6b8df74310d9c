"""The regression suite, short version, as CI runs it: six HIL cases through the real CLI,
JUnit XML written, every case passing."""

import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(600)


def test_short_regression_suite_passes(tmp_path):
    junit = tmp_path / "junit.xml"
    r = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), "hil", "run", "suites/regression.yaml",
                        "--short", "--junit", str(junit)], cwd=ROOT, capture_output=True, text=True, timeout=580)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    suite = ET.parse(junit).getroot()
    cases = suite.iter("testcase")
    names = sorted(c.get("name") for c in cases)
    assert len(names) == 6, names
    for topic in ("dr_delivery", "comm_loss", "iec104_link_loss", "pv_overvoltage", "controller_restart",
                  "emergency_shed"):
        assert any(topic in n for n in names), topic
    assert not list(suite.iter("failure")) and not list(suite.iter("error"))
    # progress per case, a totals line, each case's folder named; passed cases drop their recording
    for i in range(1, 7):
        assert f"[{i}/6] " in r.stdout
    assert "suite regression: 6 passed, 0 failed, 0 errors" in r.stdout and f"JUnit {junit}" in r.stdout
    outs = [p.get("value") for p in suite.iter("property") if p.get("name") == "results"]
    assert len(outs) == 6 and all(Path(o, "summary.json").exists() for o in outs)
    assert all("pass: " in (c.findtext("system-out") or "") for c in suite.iter("testcase"))


def test_junit_failure_message_names_assertions_and_replay(tmp_path):
    from hil.suite import CaseResult, Suite, junit_xml, totals_line

    (tmp_path / "links.jsonl").write_text("{}\n")
    bad = CaseResult("a_case_with_a_rather_long_name_that_used_to_be_cut_at_eighty_columns", "x.yaml", False, 3.0,
                     [{"kpi": "dr.e1.delivery_pct", "op": ">=", "value": 90.0, "actual": 71.2, "passed": False},
                      {"kpi": "violations.minutes", "op": "==", "value": 0.0, "actual": 0.0, "passed": True}],
                     out=str(tmp_path))
    good = CaseResult("ok", "y.yaml", True, 2.0, [{"kpi": "k", "op": "<", "value": 1.0, "actual": 0.5,
                                                   "passed": True}], out=None)
    suite = Suite(name="s", cases=[{"scenario": "x.yaml"}])
    root = ET.fromstring(junit_xml(suite, [bad, good]).split("\n", 1)[1])
    f = root.find("testcase/failure")
    assert f.get("message") == "dr.e1.delivery_pct >= 90.0 (actual 71.2)"
    assert "FAIL: dr.e1.delivery_pct >= 90.0 (actual 71.2)" in f.text and "pass: violations.minutes" in f.text
    assert f"replay: gridtwin hil replay {tmp_path}" in f.text
    assert totals_line(suite, [bad, good], "runs/hil") == (
        "suite s: 1 passed, 1 failed, 0 errors (2/3 assertions) in 5.0 s; results in runs/hil")
