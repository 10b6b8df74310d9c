"""Twin speed, measured against pandapower's own timeseries module in the same run.

Cases (each prints sim s / wall s):
  feeder  SimBench 1-MV-rural--0-sw with 5,000 PV (3-10 kWp), 3,000 batteries (10 kWh / 5 kW),
          2,000 EV chargers and 100,000 TCLs (0.1 kW), 1 s device step, 60 s power flow, no
          controller; beside `pandapower.timeseries.run_timeseries` (DFData/ConstControl load and
          sgen profiles, its documented use) on the same feeder with the same number of power
          flows, and the ratio of the two.
  solve   the lean power flow (grid_models.power_flow.PowerFlow) against `pandapower.runpp`
          (with recycle) per solve, same net, same injections.
  scale   10^3 ... 10^6 devices (same mix, TCL ratings scaled so the feeder load stays the same),
          each size in its own process: sim s / wall s and peak memory (max RSS).
  main    the main job, scenarios/cigre_mv_day.yaml through the CLI (controller on).

The machine may be shared: keep --sim-s short and say so with the figures.
Run: .venv/bin/python benchmarks/twin_speed.py [--sim-s 3600] [--cases feeder,solve,scale,main]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scenarios.model import Scenario
from twin.simulation import Twin

CODE = "1-MV-rural--0-sw"
MIX = {"pv": 5000, "battery": 3000, "ev": 2000, "tcl": 100_000}


def feeder_case(sim_s: float, n_devices: int | None = None) -> Scenario:
    """The issue's feeder-scale case; n_devices rescales the mix (TCL load kept constant)."""
    total = sum(MIX.values())
    k = 1.0 if n_devices is None else n_devices / total
    n = {kind: max(1, round(c * k)) for kind, c in MIX.items()}
    tcl_kw = 0.1 * MIX["tcl"] / n["tcl"]
    return Scenario.model_validate({
        "name": "feeder_scale", "start": "2026-06-21T10:00:00Z", "duration_s": sim_s, "seed": 1,
        "device_step_s": 1, "power_flow_interval_s": 60,
        "feeder": {"kind": "simbench", "code": CODE},
        "fleet": [
            {"name": "pv", "kind": "pv", "count": n["pv"], "record_devices": 0,
             "params": {"p_peak_kw": {"dist": "uniform", "low": 3, "high": 10}, "s_rated_kva": 10}},
            {"name": "bat", "kind": "battery", "count": n["battery"], "record_devices": 0,
             "params": {"e_cap_kwh": 10, "p_max_kw": 5}},
            {"name": "ev", "kind": "ev", "count": n["ev"], "record_devices": 0},
            {"name": "tcl", "kind": "tcl", "count": n["tcl"], "record_devices": 0,
             "params": {"p_rated_kw": tcl_kw}},
        ],
        "controller": {"enabled": False}, "outputs": {"report": False, "timeseries_every_s": 60},
    })


def run_twin(scenario: Scenario) -> dict:
    t0 = time.perf_counter()
    twin = Twin(scenario)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    twin.run()
    wall = time.perf_counter() - t0
    tcl = [f.kernel.summary() for f in twin.fleets.values() if hasattr(f, "kernel")]
    return {"build_s": build, "wall_s": wall, "speed": scenario.duration_s / wall, "power_flows": twin.pf.runs,
            "failed": twin.failed_intervals, "devices": sum(f.n for f in twin.fleets.values()),
            "tcl_kernel": "; ".join(tcl)}


def run_pandapower_timeseries(n_steps: int) -> float:
    """pandapower's timeseries module on the same feeder: load and sgen profiles (DFData)
    applied by ConstControl, one runpp per time step; wall seconds for n_steps."""
    import pandapower as pp
    import pandas as pd
    from pandapower.control import ConstControl
    from pandapower.timeseries import DFData, OutputWriter, run_timeseries

    from grid_models.feeders import build_feeder

    net = build_feeder("simbench", CODE)
    rng = np.random.default_rng(0)
    steps = np.arange(n_steps)
    shape = 0.6 + 0.3 * np.sin(2 * np.pi * steps / 1440.0)
    load_p = pd.DataFrame(np.outer(shape, net.load.p_mw.to_numpy()) * (1 + 0.02 * rng.standard_normal(
        (n_steps, len(net.load)))), columns=net.load.index)
    sgen_p = pd.DataFrame(np.outer(0.5 + 0.4 * np.cos(2 * np.pi * steps / 1440.0), net.sgen.p_mw.to_numpy()),
                          columns=net.sgen.index)
    ConstControl(net, element="load", variable="p_mw", element_index=net.load.index,
                 data_source=DFData(load_p), profile_name=net.load.index)
    ConstControl(net, element="sgen", variable="p_mw", element_index=net.sgen.index,
                 data_source=DFData(sgen_p), profile_name=net.sgen.index)
    OutputWriter(net, steps, output_path=None, log_variables=[
        ("res_bus", "vm_pu"), ("res_line", "loading_percent"), ("res_ext_grid", "p_mw")])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, numba=True)  # numba compilation outside the timing
        t0 = time.perf_counter()
        run_timeseries(net, time_steps=steps, numba=True, verbose=False)
    return time.perf_counter() - t0


def case_feeder(sim_s: float) -> None:
    n_pf = int(sim_s // 60)
    run_twin(feeder_case(120.0))  # warm numba / pandapower in this process
    # pandapower before and after gridtwin, averaged: on a shared machine the load drifts
    pp_before = run_pandapower_timeseries(n_pf)
    tw = run_twin(feeder_case(sim_s))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # before pandapower's run
    pp_after = run_pandapower_timeseries(tw["power_flows"])
    pp_wall = 0.5 * (pp_before + pp_after)
    print(f"feeder case ({CODE}, {tw['devices']:,} devices, 1 s device step, 60 s power flow, "
          f"{sim_s:g} s simulated, {n_pf} power flows):")
    print(f"  gridtwin          {tw['wall_s']:8.2f} s wall  {tw['speed']:8.0f} sim s / wall s  "
          f"(build {tw['build_s']:.1f} s, {tw['power_flows']} power flows, {tw['failed']} failed, "
          f"peak RSS {rss_mb:.0f} MB)")
    print(f"  TCL kernel: {tw['tcl_kernel']}")
    print(f"  pandapower ts     {pp_wall:8.2f} s wall  {sim_s / pp_wall:8.0f} sim s / wall s  "
          f"(run_timeseries, {tw['power_flows']} time steps, DFData/ConstControl, no devices; "
          f"mean of {pp_before:.2f} s before and {pp_after:.2f} s after gridtwin)")
    print(f"  ratio gridtwin / pandapower speed: {pp_wall / tw['wall_s']:.2f}")


def case_solve(n: int = 50) -> None:
    from grid_models.feeders import build_feeder, load_buses
    from grid_models.power_flow import PowerFlow

    print(f"power flow per solve, {CODE} (same injections, {n} solves each):")
    rng = np.random.default_rng(0)
    walls = {}
    for lean in (True, False):
        net = build_feeder("simbench", CODE)
        pf = PowerFlow(net, load_buses(net), lean=lean)
        m = len(pf.der_buses)
        inj = [rng.uniform(-20, 20, m) for _ in range(n + 2)]
        pf.run(inj[0], np.zeros(m))
        pf.run(inj[1], np.zeros(m))
        t0 = time.perf_counter()
        for k in range(n):
            pf.run(inj[k + 2], np.zeros(m), load_scale=0.5 + 0.5 * k / n)
        walls[lean] = (time.perf_counter() - t0) / n
    print(f"  lean Newton-Raphson  {walls[True] * 1e3:7.2f} ms")
    print(f"  pandapower.runpp     {walls[False] * 1e3:7.2f} ms (numba, recycle)")
    print(f"  ratio: {walls[False] / walls[True]:.1f}x")


def case_scale(sim_s: float, sizes: list[int]) -> None:
    print(f"scaling ({CODE}, same device mix, {sim_s:g} s simulated, one process per size):")
    print(f"  {'devices':>9} {'wall s':>8} {'sim s / wall s':>15} {'device-steps/s':>15} {'peak RSS MB':>12}")
    for n in sizes:
        r = subprocess.run([sys.executable, __file__, "--child", str(n), "--sim-s", str(sim_s)],
                           capture_output=True, text=True, check=False, cwd=ROOT)
        if r.returncode != 0:
            print(f"  {n:>9,} failed: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
            continue
        d = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"  {d['devices']:>9,} {d['wall_s']:>8.2f} {d['speed']:>15.0f} "
              f"{d['devices'] * sim_s / d['wall_s']:>15.3g} {d['max_rss_mb']:>12.0f}")


def child(n: int, sim_s: float) -> None:
    run_twin(feeder_case(60.0, n))  # warm-up in this process
    d = run_twin(feeder_case(sim_s, n))
    d["max_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps(d))


def case_main(sim_s: float) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), "run", "scenarios/cigre_mv_day.yaml",
                            "--duration-s", str(sim_s), "--out", tmp, "--quiet"],
                           capture_output=True, text=True, check=False, cwd=ROOT)
        total = time.perf_counter() - t0
        runs = [p for p in Path(tmp).iterdir() if p.is_dir()]
        if not runs:
            print(f"main job failed: {r.stderr.strip()[-300:]}")
            return
        s = json.loads((runs[0] / "summary.json").read_text())
    print(f"main job cigre_mv_day ({sim_s:g} s simulated, controller on, via the CLI): run {s['wall_s']:.2f} s "
          f"wall, x{s['speedup']:.0f}; process total {total:.1f} s (imports, numba, feeder build)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim-s", type=float, default=3600.0, help="simulated seconds per case")
    ap.add_argument("--cases", default="solve,feeder,scale,main")
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--scale-sim-s", type=float, default=300.0)
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.sim_s)
        return
    print(f"cores: {os.cpu_count()}")
    cases = args.cases.split(",")
    if "solve" in cases:
        case_solve()
    if "feeder" in cases:
        case_feeder(args.sim_s)
    if "scale" in cases:
        case_scale(args.scale_sim_s, [int(x) for x in args.sizes.split(",")])
    if "main" in cases:
        case_main(args.sim_s)


if __name__ == "__main__":
    main()
