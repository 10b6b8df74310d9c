"""What a Dask worker runs for one sample: a whole scenario (twin, and the in-process controller
when the scenario enables it) through `hil.runner.run_scenario`, reduced to one results row.

Any exception is the sample's result (status `error`, one-line text, traceback kept with the run
when `keep_runs` asks): a failing sample never stops the sweep.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
import traceback
from pathlib import Path


def worker_name() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"local:{socket.gethostname()}:{os.getpid()}"


def run_sample(task: dict) -> dict:
    """task: sample_id, key, scenario (resolved dict), source_dir, kpis, keep_runs, run_root."""
    from hil.runner import run_scenario
    from hil.sweep.spec import Sample, kpi_value, scenario_of

    t0 = time.perf_counter()
    row = {"sample_id": task["sample_id"], "key": task["key"], "status": "ok", "error": "",
           "worker": worker_name(), "run_dir": ""}
    keep = task["keep_runs"]
    tmp = Path(tempfile.mkdtemp(prefix=f"gridtwin-sample-{task['key']}-"))
    run_out = tmp
    try:
        sample = Sample(task["sample_id"], 0, 0, task["scenario"]["seed"], {}, task["scenario"], task["key"])
        scenario = scenario_of(sample, Path(task["source_dir"]))
        scenario.outputs.report = keep == "all"  # a per-run report only where the run is kept
        summary, run_out = run_scenario(scenario, out_root=tmp, quiet=True)
        for k in task["kpis"]:
            row[k] = kpi_value(summary, k)
        failed_pf = _failed_power_flows(summary, Path(run_out))
        if failed_pf:
            row.update(status="error", error=f"power flow did not converge in {failed_pf[0]} of "
                                             f"{failed_pf[1]} intervals")
    except Exception as e:  # noqa: BLE001 - every failure is this sample's result
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        row.update(status="error", error=f"{type(e).__name__}: {msg}"[:500])
        for k in task["kpis"]:
            row.setdefault(k, None)
        (tmp / "error.txt").write_text(traceback.format_exc())
    row["wall_s"] = round(time.perf_counter() - t0, 3)
    if keep == "all" or (keep == "failed" and row["status"] != "ok"):
        row["run_dir"] = _keep(tmp, run_out, task)
    shutil.rmtree(tmp, ignore_errors=True)
    return row


def _failed_power_flows(summary: dict, run_out: Path):
    """(failed, total) power-flow intervals that did not solve, or None if all solved: the
    twin's own count where the summary has it, else NaN voltage rows in the timeseries."""
    pf = summary.get("power_flow") or {}
    if "failed_intervals" in pf:
        n = int(pf.get("failed_intervals") or 0)
        return (n, int(pf.get("runs") or summary.get("power_flows") or 0)) if n else None
    import pyarrow.parquet as pq

    f = run_out / "timeseries.parquet"
    if not f.exists():
        return None
    col = pq.read_table(f, columns=["v_min_pu"]).column(0).to_numpy(zero_copy_only=False)
    import numpy as np

    bad = int(np.isnan(np.asarray(col, dtype=float)).sum())
    return (bad, len(col)) if bad else None


def _keep(tmp: Path, run_out: Path, task: dict) -> str:
    """Move the sample's run folder (or, for a failed start, its scenario and traceback) under
    the sweep's runs/ folder: shared filesystem assumed for remote workers."""
    import yaml

    dest = Path(task["run_root"]) / f"{task['sample_id']:05d}-{task['key']}"
    src = run_out if run_out != tmp and Path(run_out).exists() else tmp
    try:
        (src / "scenario.yaml").write_text(yaml.safe_dump(task["scenario"], sort_keys=False))
        if (tmp / "error.txt").exists() and src != tmp:
            shutil.copy(tmp / "error.txt", src / "error.txt")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest, ignore_errors=True)
        shutil.copytree(src, dest)
        return str(dest)
    except OSError as e:
        return f"not kept: {e}"
