"""TCL kernel speed: TCL-steps per second (devices x steps / wall s) of the numba first-order
kernel (ETP + hysteresis + lockout + per-step aggregate power) for 10^4, 10^5, 10^6 devices,
against the plain-numpy vectorised version of the same model measured in the same run.

Run: .venv/bin/python benchmarks/tcl_speed.py [--sizes 10000,100000,1000000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numba

from twin.tcl_kernel import advance_first_order, advance_numpy, n_blocks_for


def population(n: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    r = rng.uniform(1.6, 2.4, n)
    c = rng.uniform(1.6, 2.4, n)
    p = rng.uniform(3.5, 5.5, n)
    cop = rng.uniform(2.5, 3.5, n)
    t_set = rng.uniform(21, 24, n)
    half = rng.uniform(0.2, 0.3, n)
    return {
        "state": [t_set + rng.uniform(-1, 1, n) * half, (rng.uniform(size=n) < 0.45).astype(np.int8),
                  rng.uniform(0, 600, n), np.zeros(n, np.int64), np.zeros(n), np.zeros(n, np.int64)],
        "r": r, "c": c, "p": p, "gain": r * p * cop, "t_set": t_set, "half": half,
        "comfort": np.ones(n), "min_on": rng.uniform(120, 240, n), "min_off": rng.uniform(120, 240, n),
        "mode": np.ones(n), "offset": np.zeros(n), "force": np.zeros(n, np.int8),
        "override": np.zeros(n, np.bool_),
    }


def params(pop, dt):
    decay = np.exp(-dt / (pop["r"] * pop["c"] * 3600.0))
    return (decay, pop["gain"], pop["p"], pop["mode"], pop["t_set"], pop["half"], pop["comfort"],
            pop["min_on"], pop["min_off"], pop["offset"], pop["force"], pop["override"])


def run_numba(pop, t_out, dt):
    n = pop["r"].size
    agg = np.zeros(t_out.size)
    t0 = time.perf_counter()
    advance_first_order(*pop["state"], *params(pop, dt), np.zeros(n), np.zeros(n), np.ones(n, np.bool_),
                        t_out, dt, 1, 0, n_blocks_for(n), agg)
    return time.perf_counter() - t0, agg


def run_numpy(pop, t_out, dt):
    agg = np.zeros(t_out.size)
    t0 = time.perf_counter()
    advance_numpy(*pop["state"], *params(pop, dt), t_out, dt, agg)
    return time.perf_counter() - t0, agg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--work", type=float, default=6e8, help="TCL-steps per numba measurement")
    ap.add_argument("--numpy-work", type=float, default=2e7, help="TCL-steps per numpy measurement")
    ap.add_argument("--repeat", type=int, default=3, help="best of N")
    args = ap.parse_args()
    dt = 2.0
    t0 = time.perf_counter()
    warm = population(1000)
    run_numba(warm, np.full(10, 34.0), dt)
    compile_s = time.perf_counter() - t0
    print(f"cores: {os.cpu_count()} (numba threads {numba.get_num_threads()}), numba {numba.__version__}, "
          f"numpy {np.__version__}; first-order ETP + hysteresis + lockout, dt {dt:g} s, "
          f"aggregate power every step; best of {args.repeat}; first call incl. cache load {compile_s:.2f} s")
    print(f"{'devices':>9} {'steps':>6} {'numba TCL-steps/s':>18} {'numpy TCL-steps/s':>18} "
          f"{'numba/numpy':>12} {'agg match':>10}")
    for n in [int(x) for x in args.sizes.split(",")]:
        steps = max(10, int(args.work / n))
        np_steps = max(2, int(args.numpy_work / n))
        t_out = 34.0 + np.sin(np.arange(steps) / 300.0)
        best_nb = min(run_numba(population(n), t_out, dt)[0] for _ in range(args.repeat))
        best_np = min(run_numpy(population(n), t_out[:np_steps], dt)[0] for _ in range(args.repeat))
        # the two implementations agree on the same inputs (first np_steps steps)
        a = run_numba(population(n), t_out[:np_steps], dt)[1]
        b = run_numpy(population(n), t_out[:np_steps], dt)[1]
        match = bool(np.allclose(a, b, rtol=1e-9))
        r_nb = n * steps / best_nb
        r_np = n * np_steps / best_np
        print(f"{n:>9} {steps:>6} {r_nb:>18.3e} {r_np:>18.3e} {r_nb / r_np:>11.1f}x {match!s:>10}")


if __name__ == "__main__":
    main()
