"""Dispatch optimizer speed: day-ahead LP (96 x 15 min) with 100 / 1,000 batteries and the
5-minute real-time re-dispatch, Pyomo (appsi HiGHS) against a direct sparse-matrix highspy
build of the same per-device LP, measured in the same run.

    .venv/bin/python benchmarks/dispatch_speed.py [--sizes 100 1000] [--no-per-device-pyomo]

Rows: "direct" = scipy.sparse -> highspy.passModel (per-device LP, the baseline);
"pyomo per-device" = Dispatcher(aggregate=False) (same LP through Pyomo);
"pyomo aggregated" = Dispatcher() (virtual batteries per bus/efficiency/C-rate/SOC bin,
then disaggregation); real-time = 24 x 5 min, model reused, its numbers pushed to HiGHS as
arrays (Dispatcher default) and, in the same run, through Params + appsi's update()
(Dispatcher(bulk_update=False)).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

import highspy
import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from benchmarks.dispatch_problems import random_problem
from controller.dispatch.dispatcher import Dispatcher


def problem(n_bat: int, n_steps: int, step_s: float, seed: int = 1, t0_hour: float = 0.0):
    return random_problem(n_bat=n_bat, n_pv=0, n_ev=0, n_flex=0, n_tcl=0, n_steps=n_steps,
                          step_s=step_s, n_buses=10, seed=seed, t0_hour=t0_hour)


def direct_highs(p, solver: str = "choose"):
    """The per-device battery LP built as a sparse matrix and passed to HiGHS directly.
    Columns: ch[i,t], dis[i,t], soc[i,t] (device-major), head[t], peak, soc_short[i]."""
    t0 = time.perf_counter()
    b, n, dt = p.batteries, p.n_steps, p.step_h
    nb = b.n
    nv = 3 * nb * n + n + 1 + nb
    ch = np.arange(nb * n).reshape(nb, n)
    dis, soc = ch + nb * n, ch + 2 * nb * n
    head, peak, short = 3 * nb * n + np.arange(n), 3 * nb * n + n, 3 * nb * n + n + 1 + np.arange(nb)
    rows, cols, vals = [], [], []

    def add(r, c, v):
        r, c = np.broadcast_arrays(r, c)
        rows.append(r.ravel()), cols.append(c.ravel()), vals.append(np.broadcast_to(v, r.shape).ravel())
    r_soc = np.arange(nb * n).reshape(nb, n)  # SOC dynamics (equalities)
    add(r_soc, soc, 1.0)
    add(r_soc[:, 1:], soc[:, :-1], -1.0)
    add(r_soc, ch, -(b.eta_ch * dt)[:, None])
    add(r_soc, dis, (dt / b.eta_dis)[:, None])
    r_fin = nb * n + np.arange(nb)  # end SOC
    add(r_fin, soc[:, -1], 1.0)
    add(r_fin, short, 1.0)
    r_head = nb * n + nb + np.arange(n)  # head definition
    add(r_head, head, 1.0)
    add(r_head[None, :], ch, -1.0)
    add(r_head[None, :], dis, 1.0)
    r_peak = nb * n + nb + n + np.arange(n)  # peak >= head
    add(r_peak, peak, 1.0)
    add(r_peak, head, -1.0)
    nr = nb * n + nb + 2 * n
    A = sp.csc_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(nr, nv))
    soc0 = np.clip(b.soc_kwh, b.soc_min_kwh, b.soc_max_kwh)
    rl, ru = np.zeros(nr), np.zeros(nr)
    rl[r_soc[:, 0]] = ru[r_soc[:, 0]] = soc0
    rl[r_fin], ru[r_fin] = soc0, np.inf
    rl[r_head] = ru[r_head] = p.net_load_forecast_kw
    rl[r_peak], ru[r_peak] = 0.0, np.inf
    cost = np.zeros(nv)
    cost[ch] = cost[dis] = (b.deg_cost_eur_per_kwh * dt)[:, None]
    cost[head] = p.prices_eur_per_mwh * dt / 1000.0
    cost[short] = p.weights.soc_end_eur_per_kwh
    cost[peak] = p.weights.peak_eur_per_kw
    lo, hi = np.zeros(nv), np.full(nv, np.inf)
    hi[ch] = hi[dis] = b.p_max_kw[:, None]
    lo[soc], hi[soc] = b.soc_min_kwh[:, None], b.soc_max_kwh[:, None]
    lo[head], lo[peak] = -np.inf, -np.inf
    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = nv, nr
    lp.col_cost_, lp.col_lower_, lp.col_upper_ = cost, lo, hi
    lp.row_lower_, lp.row_upper_ = rl, ru
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = A.indptr, A.indices, A.data
    h = highspy.Highs()
    h.setOptionValue("output_flag", False)
    h.setOptionValue("solver", solver)
    h.passModel(lp)
    build = time.perf_counter() - t0
    t1 = time.perf_counter()
    h.run()
    solve = time.perf_counter() - t1
    return build, solve, h.getInfo().objective_function_value, nv, nr


def row(name, build, solve, base, obj, extra=""):
    tot = build + solve
    print(f"  {name:<28} build {build:8.3f} s  solve {solve:8.3f} s  total {tot:8.3f} s  "
          f"x{tot / base:6.2f} vs direct  objective {obj:10.3f} EUR {extra}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000])
    ap.add_argument("--no-per-device-pyomo", action="store_true",
                    help="skip the slow per-device Pyomo build")
    args = ap.parse_args()
    logging.disable(logging.INFO)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"dispatch_speed: cores available {cores} (os.cpu_count {os.cpu_count()}), "
          f"highspy {highspy.Highs().version()}")
    for nb in args.sizes:
        p = problem(nb, 96, 900.0)
        b, s, obj, nv, nr = direct_highs(p)
        print(f"day-ahead, {nb} batteries x 96 steps (per-device LP: {nv} columns, {nr} rows)")
        base = b + s
        row("direct highspy (baseline)", b, s, base, obj)
        if not args.no_per_device_pyomo:
            t = time.perf_counter()
            sch = Dispatcher(aggregate=False).day_ahead(p)
            wall = time.perf_counter() - t
            row("pyomo per-device", sch.stats.build_s, sch.stats.solve_s, base, sch.objective_eur,
                f"(wall incl. results {wall:.3f} s)")
        t = time.perf_counter()
        sch = Dispatcher().day_ahead(p)
        wall = time.perf_counter() - t
        row("pyomo aggregated", sch.stats.build_s, sch.stats.solve_s, base, sch.objective_eur,
            f"(wall incl. disaggregation {wall:.3f} s; {sch.stats.n_groups} groups, "
            f"residual {sch.disagg_residual_kw:.2f} kW/step mean)")

        runs = {}
        for bulk in (True, False):  # arrays straight into HiGHS / Params + appsi's update()
            d = Dispatcher(bulk_update=bulk)
            walls, solves, updates = [], [], []
            for k in range(6):
                q = problem(nb, 24, 300.0, t0_hour=17 + k * 5 / 60)
                t = time.perf_counter()
                sch = d.realtime(q)
                walls.append(time.perf_counter() - t)
                if k:
                    assert sch.stats.reused_model
                    updates.append(sch.stats.build_s)
                    solves.append(sch.stats.solve_s)
            runs[bulk] = (walls, solves, updates, sch.objective_eur)
        b, s, obj, nv, nr = direct_highs(q, "simplex")
        print(f"real-time, {nb} batteries x 24 steps of 5 min (per-device LP: {nv} columns, {nr} rows)")
        row("direct highspy (fresh)", b, s, b + s, obj)
        print(f"  {'pyomo aggregated, first':<28} wall {runs[True][0][0]:8.3f} s (build + solve + disaggregation)")
        for bulk, name in ((True, "reused, bulk arrays"), (False, "reused, appsi update()")):
            walls, solves, updates, o = runs[bulk]
            print(f"  {name:<28} update {np.mean(updates):8.3f} s  solve {np.mean(solves):8.3f} s  "
                  f"wall {np.mean(walls[1:]):8.3f} s mean of 5  x{np.mean(walls[1:]) / (b + s):6.2f} vs direct "
                  f"fresh  objective {o:10.3f} EUR")
        print(f"  re-solve wall, bulk / appsi update(): {np.mean(runs[True][0][1:]) / np.mean(runs[False][0][1:]):.2f}")


if __name__ == "__main__":
    main()
