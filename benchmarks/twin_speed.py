"""Twin speed: simulated seconds per wall second for cigre_mv_day with 1,000 and 10,000 DERs
(1 s device step, 60 s power flow), against the same feeder with no DER fleet in the same run.

Run: .venv/bin/python benchmarks/twin_speed.py [--sim-s 3600]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from scenarios.load import load_scenario
from twin.simulation import Twin


def scaled(base, n_der: int, sim_s: float):
    s = base.model_copy(deep=True)
    s.duration_s = sim_s
    s.outputs.report = False
    total = sum(g.count for g in base.fleet)
    for g in s.fleet:
        g.count = round(g.count * n_der / total) if n_der else 0
        g.record_devices = 0
    return s


def measure(scenario) -> tuple[float, float, int]:
    twin = Twin(scenario)
    pf_time = 0.0
    solve = twin.solve_power_flow

    def timed():
        nonlocal pf_time
        t = time.perf_counter()
        r = solve()
        pf_time += time.perf_counter() - t
        return r

    twin.solve_power_flow = timed
    t0 = time.perf_counter()
    twin.run()
    wall = time.perf_counter() - t0
    return wall, pf_time, sum(f.n for f in twin.fleets.values())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sim-s", type=float, default=3600.0, help="simulated seconds per case")
    ap.add_argument("--sizes", default="0,1000,10000")
    args = ap.parse_args()
    base = load_scenario(ROOT / "scenarios" / "cigre_mv_day.yaml")
    base = base.model_copy(update={"start": base.start.replace(hour=11)})  # PV active
    measure(scaled(base, 100, 120))  # warm numba/pandapower caches
    print(f"cores: {os.cpu_count()}, scenario cigre_mv_day from 11:00 UTC, {args.sim_s:g} s simulated, "
          "1 s device step, 60 s power flow")
    print(f"{'DERs':>7} {'wall s':>8} {'sim s / wall s':>15} {'vs no-DER run':>14} {'power-flow share':>17}")
    ref = None
    for n in [int(x) for x in args.sizes.split(",")]:
        wall, pf, count = measure(scaled(base, n, args.sim_s))
        speed = args.sim_s / wall
        ref = ref or speed
        print(f"{count:>7} {wall:>8.2f} {speed:>15.0f} {speed / ref:>13.2f}x {100 * pf / wall:>16.0f}%")


if __name__ == "__main__":
    main()
