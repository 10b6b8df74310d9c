"""The `gridtwin` Python facade: loading from a file or a mapping with the CLI's one-line
errors, the version. (Running and sweeping from Python: the README example in test_sweep.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import gridtwin
from scenarios.load import ScenarioError

ROOT = Path(__file__).resolve().parent.parent


def test_load_scenario_from_file_and_mapping():
    path = ROOT / "scenarios" / "pv_overvoltage.yaml"
    a = gridtwin.load_scenario(path)
    b = gridtwin.load_scenario(yaml.safe_load(path.read_text()))
    assert a.model_dump() == b.model_dump() and a.name == "pv_overvoltage"
    assert gridtwin.load_scenario(a) is a


def test_load_scenario_errors_are_one_line():
    data = yaml.safe_load((ROOT / "scenarios" / "pv_overvoltage.yaml").read_text())
    data["fleet"][0]["count"] = "many"
    with pytest.raises(ScenarioError) as e:
        gridtwin.load_scenario(data)
    assert str(e.value).startswith("<scenario>: fleet[0].count: ") and "'many'" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(ScenarioError, match="expected a file path or a mapping"):
        gridtwin.load_scenario(42)
    with pytest.raises(ScenarioError, match="cannot read scenario file"):
        gridtwin.load_scenario(ROOT / "scenarios" / "nope.yaml")


def test_version():
    from importlib.metadata import version

    assert gridtwin.__version__ == version("gridtwin")
