"""Sweeps on real Dask: a LocalCluster (the README's Python example) and an external cluster
started as `dask scheduler` / `dask worker` subprocesses on 127.0.0.1; the same table from
both; failure isolation; resume after the sweep process is killed mid-way.

Every sample is a real (short) scenario run; the external worker is shared by the tests of
this module so it pays numba's first-run compilation once."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
QUICK = ROOT / "scenarios" / "sweeps" / "pv_quick.yaml"
BIN = Path(sys.executable).parent
KPIS = ["voltage.max_pu", "violations.minutes", "energy_kwh.pv"]
SAME = ["sample_id", "point", "replicate", "seed", "fleet[rooftop_pv].count", *KPIS, "status", "key"]


def _wait(cond, timeout_s: float, what: str):
    t_end = time.monotonic() + timeout_s
    while time.monotonic() < t_end:
        v = cond()
        if v:
            return v
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")


def _stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory):
    """tcp:// address of a real scheduler with one one-thread worker process, ports by the kernel."""
    from distributed import Client

    d = tmp_path_factory.mktemp("dask")
    sfile = d / "scheduler.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    try:
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(sfile)], stdout=open(d / "scheduler.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True, cwd=d, env=env))
        _wait(lambda: sfile.exists() and sfile.stat().st_size > 0, 90, "the scheduler file")
        addr = json.loads(sfile.read_text())["address"]
        assert addr.startswith("tcp://127.0.0.1:")
        procs.append(subprocess.Popen(
            [str(BIN / "dask"), "worker", "--scheduler-file", str(sfile), "--nworkers", "1",
             "--nthreads", "1", "--host", "127.0.0.1", "--no-dashboard", "--name", "external-0"],
            stdout=open(d / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True,
            cwd=d, env=env))
        with Client(addr, timeout="60s") as c:
            c.wait_for_workers(1, timeout=120)
        yield addr
    finally:
        for p in reversed(procs):
            _stop(p)


@pytest.fixture(scope="module")
def readme_result(tmp_path_factory):
    """Run the README's Python example as written (paths made absolute, cwd a temp folder)."""
    text = (ROOT / "README.md").read_text()
    block = re.search(r"```python\n(import gridtwin\n.*?)```", text, re.DOTALL).group(1)
    lines = [x for x in block.splitlines() if x.strip()]
    assert len(lines) == 5, "the README promises a five-line example"
    code = block.replace('"scenarios/', f'"{ROOT}/scenarios/')
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("readme"))
    try:
        ns: dict = {}
        exec(compile(code, "README.md", "exec"), ns)
    finally:
        os.chdir(cwd)
    return ns


def test_readme_python_example_runs(readme_result):
    r, df = readme_result["r"], readme_result["df"]
    # pv_overvoltage's noon export lifts the feeder above its band within half an hour
    assert r.summary["duration_s"] == 1800
    assert r.summary["voltage"]["max_pu"] > 1.05
    assert r.timeseries["v_max_pu"].max() == pytest.approx(r.summary["voltage"]["max_pu"])
    assert any(e.get("kind") == "violation" for e in r.events)
    assert (r.path / "summary.json").exists()
    assert list(df["fleet[rooftop_pv].count"]) == [20, 20, 60, 60]
    assert (df["status"] == "ok").all() and df["error"].eq("").all()
    # the same two seeds at both PV counts (common random numbers), different between replicates
    assert list(df["seed"])[:2] == list(df["seed"])[2:] and df["seed"].iloc[0] != df["seed"].iloc[1]
    # more PV, higher voltage, for every seed
    lo, hi = df[df.point == 0].set_index("replicate"), df[df.point == 1].set_index("replicate")
    assert (hi["voltage.max_pu"] > lo["voltage.max_pu"]).all()
    assert (hi["energy_kwh.pv"] < lo["energy_kwh.pv"]).all()  # generation is negative
    out = Path(df.attrs["path"])
    assert pd.read_parquet(out / "results.parquet")[SAME].equals(df[SAME])
    assert "voltage.max_pu against fleet[rooftop_pv].count" in (out / "report.html").read_text()
    assert df["worker"].nunique() == 2  # both LocalCluster workers took samples


def test_external_scheduler_gives_the_same_table(scheduler, readme_result, tmp_path):
    import gridtwin

    df = gridtwin.sweep(QUICK, scheduler=scheduler, out=tmp_path)
    assert (df["status"] == "ok").all()
    assert set(df["worker"]) == {df["worker"].iloc[0]} and df["worker"].iloc[0].startswith("tcp://127.0.0.1:")
    ref = readme_result["df"]  # LocalCluster, 2 workers
    pd.testing.assert_frame_equal(df[SAME], ref[SAME])


def test_failing_samples_are_isolated(scheduler, tmp_path):
    """One sample's power flow diverges (60x the feeder load), one raises (negative PV size);
    both are error rows, the others run."""
    import gridtwin

    spec = {"name": "isolation", "scenario": str(ROOT / "scenarios" / "pv_overvoltage.yaml"),
            "overrides": {"duration_s": 600, "fleet[home_batteries].count": 0, "assertions": []},
            "design": "zip", "seed": 3,
            "parameters": [{"key": "feeder.base_load_scale", "values": [0.5, 60.0, 0.5, 0.5]},
                           {"key": "fleet[rooftop_pv].params.p_peak_kw", "values": [10, 10, -5, 12]}],
            "kpis": ["voltage.max_pu", "violations.minutes"], "keep_runs": "failed"}
    df = gridtwin.sweep(spec, scheduler=scheduler, out=tmp_path)
    assert list(df["status"]) == ["ok", "error", "error", "ok"]
    assert "power flow did not converge" in df["error"][1]
    assert "p_peak_kw" in df["error"][2]
    assert df["voltage.max_pu"][[0, 3]].notna().all() and pd.isna(df["voltage.max_pu"][2])
    kept = Path(df["run_dir"][2])  # keep_runs: failed keeps the failed sample's scenario and traceback
    assert (kept / "scenario.yaml").exists() and "Traceback" in (kept / "error.txt").read_text()
    assert df["run_dir"][0] == ""


def test_interrupt_kill_and_resume(scheduler, tmp_path):
    """Ctrl-C: a whole results table and exit 130; then a resumed run killed with SIGKILL
    mid-way; then a last resume completes the table without re-running finished samples."""
    import gridtwin

    def start(*extra):
        cmd = [str(BIN / "gridtwin"), "sweep", str(QUICK), "--scheduler", scheduler, "--quiet",
               "--out", str(tmp_path), *extra]
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)

    def parts():
        return sorted(tmp_path.glob("pv_quick-*/parts/*.json"))

    p = start()
    try:
        _wait(lambda: len(parts()) >= 1, 240, "the first finished sample")
        os.killpg(p.pid, signal.SIGINT)
        log, _ = p.communicate(timeout=120)
    finally:
        _stop(p)
    assert p.returncode == 130, log
    out = parts()[0].parent.parent
    n1 = len(parts())
    assert 1 <= n1 < 4, f"interrupted too late to test resume: {n1} samples done"
    assert f"continue with --resume {out}" in log
    table = pd.read_parquet(out / "results.parquet")
    assert len(table) == n1 and (table["status"] == "ok").all()

    p = start("--resume", str(out))
    try:
        _wait(lambda: len(parts()) > n1, 240, "a sample of the resumed run")
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(20)
    finally:
        _stop(p)
    before = {f.name: f.read_bytes() for f in parts()}
    assert n1 < len(before) <= 4
    if len(before) == 4:
        pytest.skip("the killed run finished every sample before the kill")
    assert len(pd.read_parquet(out / "results.parquet")) <= len(before)  # whole, if stale

    df = gridtwin.sweep(QUICK, scheduler=scheduler, resume=out)
    assert Path(df.attrs["path"]) == out and len(df) == 4 and (df["status"] == "ok").all()
    for name, data in before.items():  # finished samples were not run again
        assert (out / "parts" / name).read_bytes() == data
        row = json.loads(data)
        assert df.set_index("key").loc[row["key"], "wall_s"] == row["wall_s"]
    assert list(df["fleet[rooftop_pv].count"]) == [20, 20, 60, 60]
    assert (df[df.point == 1]["voltage.max_pu"].to_numpy() > df[df.point == 0]["voltage.max_pu"].to_numpy()).all()
    assert pd.read_parquet(out / "results.parquet")[SAME].equals(df[SAME])
