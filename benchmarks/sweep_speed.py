"""Sweep engine speed: 8 short samples (CIGRE LV noon, 4 PV counts x 2 seeds, 30 simulated
minutes each) run (a) in a plain loop in this process, (b) by `run_sweep` on a LocalCluster
of 1 worker process, (c) on 2 worker processes. Workers are warmed first (one sample each:
numba compilation and imports are a process's one-off cost, reported separately), so (b)
against (a) is the engine's own per-sample overhead (task shipping, results parts, table,
report) and (b)/(c) the speedup from a second worker. Rounds are interleaved and the best of
each kept, since the machine may be shared.

    .venv/bin/python benchmarks/sweep_speed.py [--minutes 30]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def spec(minutes: float) -> dict:
    return {"name": "sweep_speed", "scenario": str(ROOT / "scenarios" / "pv_overvoltage.yaml"),
            "overrides": {"duration_s": minutes * 60, "fleet[home_batteries].count": 0, "assertions": []},
            "seed": 1, "seeds": 2,
            "parameters": [{"key": "fleet[rooftop_pv].count", "values": [20, 40, 60, 80]}],
            "kpis": ["voltage.max_pu", "violations.minutes"]}


def task_of(sweep, s, run_root: str) -> dict:
    return {"sample_id": s.sample_id, "key": s.key, "scenario": s.scenario,
            "source_dir": str(sweep.source_dir), "kpis": list(sweep.spec.kpis), "keep_runs": "none",
            "run_root": run_root}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=30, help="simulated minutes per sample")
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (best of each)")
    args = ap.parse_args()
    from distributed import Client, LocalCluster

    import hil.sweep.report  # noqa: F401 - plotly's import is a one-off, not per-sample, cost
    from hil.sweep.engine import run_sweep
    from hil.sweep.spec import load_sweep
    from hil.sweep.worker import run_sample

    sweep = load_sweep(spec(args.minutes))
    warm = load_sweep({**spec(5), "seed": 99}).samples[0]  # another sample: nothing is cached
    tmp = Path(tempfile.mkdtemp(prefix="sweep-speed-"))
    clusters = []
    try:
        t0 = time.perf_counter()
        run_sample(task_of(sweep, warm, str(tmp)))
        print(f"this process's first sample (imports, numba compilation): {time.perf_counter() - t0:.1f} s")
        for n in (1, 2):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                                   dashboard_address=":0", silence_logs=logging.ERROR)
            clusters.append(cluster)
            with Client(cluster) as client:
                t0 = time.perf_counter()
                client.run(run_sample, task_of(sweep, warm, str(tmp)))  # every worker, once
                print(f"LocalCluster({n}): start + warm-up sample per worker {time.perf_counter() - t0:.1f} s")
        best = {"plain": float("inf"), 1: float("inf"), 2: float("inf")}
        inside = {}
        tables = {}
        for rnd in range(args.rounds):  # interleaved rounds, best of each: a shared machine's noise
            t0 = time.perf_counter()
            plain = [run_sample(task_of(sweep, s, str(tmp))) for s in sweep.samples]
            dt = time.perf_counter() - t0
            assert all(r["status"] == "ok" for r in plain)
            if dt < best["plain"]:
                best["plain"], inside["plain"] = dt, sum(r["wall_s"] for r in plain)
            for n, cluster in zip((1, 2), clusters):
                t0 = time.perf_counter()
                df, _ = run_sweep(sweep, root=tmp / f"w{n}-{rnd}", scheduler=cluster.scheduler_address,
                                  quiet=True, log=lambda *a: None)
                dt = time.perf_counter() - t0
                tables[n] = df
                if dt < best[n]:
                    best[n], inside[n] = dt, float(df["wall_s"].sum())
            print(f"round {rnd + 1}: plain {best['plain']:.2f} s, 1 worker {best[1]:.2f} s, "
                  f"2 workers {best[2]:.2f} s (best so far)")
        cols = ["sample_id", "seed", "voltage.max_pu", "violations.minutes"]
        same = tables[1][cols].equals(tables[2][cols])
        kpi_plain = [round(r["voltage.max_pu"], 12) for r in plain]
        same_plain = kpi_plain == [round(x, 12) for x in tables[1]["voltage.max_pu"]]
        t_plain = best["plain"]
        print(f"plain loop in one process: 8 samples in {t_plain:.2f} s ({t_plain / 8:.2f} s per sample)")
        print(f"engine, 1 worker: {best[1]:.2f} s; 2 workers: {best[2]:.2f} s")
        engine_s = best[1] - inside[1]
        print(f"engine time outside the samples, 1 worker (client, shipping, parts, table, report): "
              f"{engine_s:.2f} s = {engine_s / 8 * 1000:.0f} ms per sample, "
              f"{engine_s / inside[1] * 100:.1f} % of the samples' own time")
        over = (best[1] - t_plain) / t_plain * 100
        print(f"engine overhead, 1 worker vs plain loop: {over:+.1f} % "
              f"({(best[1] - t_plain) / 8 * 1000:+.0f} ms per sample)  [goal <= 5 %]")
        print(f"speedup, 2 workers vs 1 worker: {best[1] / best[2]:.2f}x  [goal >= 1.7x on 2 cores]")
        print(f"same results table with 1 and 2 workers: {same}; same KPIs as the plain loop: {same_plain}")
        return 0 if same and same_plain else 1
    finally:
        for c in clusters:
            c.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
