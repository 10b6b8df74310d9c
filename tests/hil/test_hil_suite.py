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
