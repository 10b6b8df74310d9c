"""Sweep files: one-line errors (file, key path, value; exit 2) before anything runs, the
design's expansion and seeds, key-path edits. No sample runs here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from hil.sweep.spec import derive_seed, load_sweep, parse_key_path, set_key_path

ROOT = Path(__file__).resolve().parent.parent
PV = str(ROOT / "scenarios" / "pv_overvoltage.yaml")


def _spec(**kw) -> dict:
    base = {"name": "t", "scenario": PV, "overrides": {"duration_s": 600},
            "parameters": [{"key": "fleet[rooftop_pv].count", "values": [10, 20]}],
            "kpis": ["voltage.max_pu"]}
    base.update(kw)
    return base


def _cli_error(tmp_path, capsys, data: dict) -> str:
    import gridtwin_cli

    f = tmp_path / "study.yaml"
    f.write_text(yaml.safe_dump(data))
    rc = gridtwin_cli.main(["sweep", str(f), "--out", str(tmp_path / "sweeps")])
    err = capsys.readouterr().err.strip()
    assert rc == 2, err
    assert len(err.splitlines()) == 1 and err.startswith(f"gridtwin: error: {f}: "), err
    assert not (tmp_path / "sweeps").exists()  # nothing written, nothing run
    return err


def test_bad_key_path_is_one_line(tmp_path, capsys):
    err = _cli_error(tmp_path, capsys, _spec(parameters=[{"key": "fleet[roof_pv].count", "values": [1]}]))
    assert "parameters[0].key" in err and "no element named 'roof_pv'" in err and "rooftop_pv" in err
    err = _cli_error(tmp_path, capsys, _spec(parameters=[{"key": "weather.cloudyness", "values": [0.1]}]))
    assert "weather.cloudyness: no such key" in err and "cloudiness" in err
    err = _cli_error(tmp_path, capsys, _spec(parameters=[{"key": "dr_events[0].reduction_kw", "values": [5]}]))
    assert "dr_events[0]: index out of range (0 elements)" in err


def test_value_the_scenario_refuses_is_one_line(tmp_path, capsys):
    err = _cli_error(tmp_path, capsys, _spec(parameters=[{"key": "weather.cloudiness", "values": [0.5, 3]}]))
    assert "sample 1 (weather.cloudiness=3)" in err and "weather.cloudiness" in err and "(got 3" in err


def test_unknown_kpi_is_one_line(tmp_path, capsys):
    err = _cli_error(tmp_path, capsys, _spec(kpis=["voltage.max_pu", "voltage.maximum"]))
    assert "kpis[1]: 'voltage.maximum' is not a KPI" in err and "voltage.max_pu" in err
    err = _cli_error(tmp_path, capsys, _spec(kpis=["voltage"]))
    assert "kpis[0]: 'voltage' is not a KPI" in err and "voltage.min_pu" in err
    err = _cli_error(tmp_path, capsys, _spec(kpis=["scenario"]))
    assert "'scenario' is text, not a number" in err
    # DR keys exist only when the controller runs the event
    err = _cli_error(tmp_path, capsys, _spec(kpis=["dr.evening.delivery_pct"]))
    assert "'dr.evening.delivery_pct' is written only when controller.enabled is true" in err


def test_hil_scenario_is_refused(tmp_path, capsys):
    hil = str(ROOT / "scenarios" / "hil" / "hil_dr_delivery.yaml")
    err = _cli_error(tmp_path, capsys, _spec(scenario=hil, parameters=[], kpis=["voltage.max_pu"]))
    assert "cannot run in a sweep (fleet[home_batteries].link is 'modbus')" in err
    assert "gridtwin hil scenario" in err
    err = _cli_error(tmp_path, capsys, _spec(parameters=[{"key": "fleet[rooftop_pv].link", "values": ["modbus"]}]))
    assert "cannot run in a sweep" in err


def test_sweep_file_schema_errors_name_the_key(tmp_path, capsys):
    err = _cli_error(tmp_path, capsys, _spec(design="random"))
    assert "design 'random' needs 'samples'" in err
    err = _cli_error(tmp_path, capsys, _spec(keep_runs="some"))
    assert "keep_runs" in err and "'some'" in err
    err = _cli_error(tmp_path, capsys, _spec(parameters=[{"key": "weather.cloudiness"}]))
    assert "parameters[0]" in err and "exactly one of values, range, dist" in err


def test_designs_and_seeds():
    g = load_sweep(_spec(seeds=3, seed=5, parameters=[
        {"key": "fleet[rooftop_pv].count", "values": [10, 20]},
        {"key": "weather.cloudiness", "range": {"start": 0.1, "stop": 0.3, "step": 0.1}}]))
    assert len(g.samples) == 2 * 3 * 3
    assert [s.params for s in g.samples[:4:3]] == [{"fleet[rooftop_pv].count": 10, "weather.cloudiness": 0.1},
                                                    {"fleet[rooftop_pv].count": 10, "weather.cloudiness": 0.2}]
    assert [s.seed for s in g.samples[:3]] == [derive_seed(5, r) for r in range(3)]
    assert g.samples[0].scenario["fleet"][0]["count"] == 10 and g.samples[0].scenario["duration_s"] == 600
    assert len({s.key for s in g.samples}) == len(g.samples)
    z = load_sweep(_spec(design="zip", parameters=[
        {"key": "fleet[rooftop_pv].count", "values": [10, 20]},
        {"key": "feeder.base_load_scale", "values": [0.5, 1.0]}]))
    assert [tuple(s.params.values()) for s in z.samples] == [(10, 0.5), (20, 1.0)]
    r1 = load_sweep(_spec(design="random", samples=4, seed=9, parameters=[
        {"key": "weather.cloudiness", "dist": {"dist": "uniform", "low": 0, "high": 0.5}},
        {"key": "fleet[rooftop_pv].count", "values": [5, 50]}]))
    r2 = load_sweep(_spec(design="random", samples=4, seed=9, parameters=r1.spec.model_dump()["parameters"]))
    assert [s.key for s in r1.samples] == [s.key for s in r2.samples]  # same file, same samples
    assert all(0 <= s.params["weather.cloudiness"] <= 0.5 for s in r1.samples)
    # scale: 50 % penetration x 0.6866 systems per % -> 34 systems (integer key)
    sc = load_sweep(_spec(parameters=[{"key": "fleet[rooftop_pv].count", "values": [50], "scale": 0.6866}]))
    assert sc.samples[0].scenario["fleet"][0]["count"] == 34
    assert sc.samples[0].params == {"fleet[rooftop_pv].count": 50}


def test_key_paths():
    assert parse_key_path("fleet[rooftop_pv].params.p_peak_kw") == ["fleet", ("name", "rooftop_pv"), "params", "p_peak_kw"]
    d = {"fleet": [{"name": "a", "params": {}}], "dr_events": [{"id": "ev", "reduction_kw": 1}]}
    set_key_path(d, "fleet[a].params.p_max_kw", 5)  # new key in a free mapping
    set_key_path(d, "dr_events[ev].reduction_kw", 9)  # by id
    assert d["fleet"][0]["params"] == {"p_max_kw": 5} and d["dr_events"][0]["reduction_kw"] == 9


def test_version_and_check(tmp_path):
    out = subprocess.run([str(Path(sys.executable).parent / "gridtwin"), "--version"],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip().startswith("gridtwin 0.")


def test_bad_cluster_options_are_one_line(tmp_path, capsys):
    import gridtwin_cli

    for extra, want in ((["--workers", "0"], "--workers: must be >= 1 (got 0)"),
                        (["--scheduler", "127.0.0.1:8786"], "--scheduler: expected tcp://HOST:PORT"),
                        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "exclude each other")):
        rc = gridtwin_cli.main(["sweep", str(ROOT / "scenarios" / "sweeps" / "pv_quick.yaml"),
                                "--out", str(tmp_path / "sweeps"), *extra])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and want in err, err
        assert not list((tmp_path / "sweeps").glob("*"))  # no half-made sweep folder


def test_shipped_sweep_schema_is_current(tmp_path):
    """scenarios/sweep.schema.json is what `gridtwin sweep --schema` writes from the model today."""
    from hil.sweep.spec import export_schema

    export_schema(tmp_path / "s.json")
    assert (tmp_path / "s.json").read_text() == (ROOT / "scenarios" / "sweep.schema.json").read_text(), \
        "regenerate: gridtwin sweep --schema scenarios/sweep.schema.json"


def test_shipped_sweep_files_are_valid():
    for f in sorted((ROOT / "scenarios" / "sweeps").glob("*.yaml")):
        sw = load_sweep(f)
        assert sw.samples, f
