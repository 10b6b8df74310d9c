"""Safety-gate latency on SimBench 1-MV-rural--0-sw, beside plain pandapower runpp.

Each check gets a fresh snapshot (base loads jittered by 2 %, as between controller cycles,
so the base power flow is re-solved every time) and a batch of random commands to PV plants
and batteries, part of which would push voltages or loadings out of limits. Prints median and
p99 gate latency, the median of one plain `pandapower.runpp` on the same net measured in the
same run, and their ratio. Target: median under 20 ms.

    .venv/bin/python benchmarks/gate_speed.py [--checks 300] [--batch 100]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandapower as pp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from controller.commands import Command
from controller.safety import GridSnapshot, SafetyGate
from grid_models.feeders import build_feeder
from scenarios.model import Limits


def fleet(net, rng):
    lb = np.array(sorted(set(net.load.bus)))
    pv_bus = rng.choice(lb, 120)
    bat_bus = rng.choice(lb, 80)
    pv = {"name": "pv", "kind": "pv", "bus": pv_bus, "p_kw": -rng.uniform(100, 400, 120), "q_kvar": np.zeros(120),
              "ratings": {"s_rated_kva": np.full(120, 500.0)}, "telemetry": {"p_avail_kw": np.full(120, 450.0)}}
    bat = {"name": "bat", "kind": "battery", "bus": bat_bus, "p_kw": np.zeros(80), "q_kvar": np.zeros(80),
               "ratings": {"p_max_kw": np.full(80, 300.0)}}
    return [pv, bat]


def commands(rng, n):
    """n distinct devices, leaning toward export (the noon case where the gate has work)."""
    out = []
    for d in rng.choice(200, n, replace=False):
        if d < 120:
            out.append(Command(f"pv/{d}", "p_limit_pct", float(rng.uniform(40, 100))))
        else:
            out.append(Command(f"bat/{d - 120}", "p_set_kw", float(rng.uniform(-300, 150))))
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checks", type=int, default=300)
    ap.add_argument("--batch", type=int, default=100)
    a = ap.parse_args(argv)
    warnings.simplefilter("ignore")
    rng = np.random.default_rng(0)
    net = build_feeder("simbench", "1-MV-rural--0-sw")
    groups = fleet(net, rng)
    load_bus = net.load.bus.to_numpy()
    p0 = net.load.p_mw.to_numpy() * 1000.0
    q0 = net.load.q_mvar.to_numpy() * 1000.0
    gate = SafetyGate(net, Limits())

    # plain pandapower runpp on the same feeder, same run
    ref = copy.deepcopy(net)
    pp.runpp(ref)
    t_pp = []
    for _ in range(30):
        t = time.perf_counter()
        pp.runpp(ref)
        t_pp.append(time.perf_counter() - t)

    lat, pfs, cut, lp, reasons = [], [], 0, 0, {}
    for k in range(a.checks + 5):
        jitter = 1.0 + 0.02 * rng.standard_normal(len(p0))
        snap = GridSnapshot.from_groups(k * 60.0, k * 60.0 + 1.0, load_bus, p0 * jitter, q0 * jitter, groups)
        cmds = commands(rng, a.batch)
        t = time.perf_counter()
        res = gate.check(cmds, snap)
        dt = time.perf_counter() - t
        if k >= 5:  # warm-up: first factorisations and imports
            lat.append(dt)
            pfs.append(gate.last_report["power_flows"])
            cut += len(res.curtailed) + len(res.rejected)
            for d in res.decisions:
                for r in d.reasons:
                    reasons[r.split(":")[0]] = reasons.get(r.split(":")[0], 0) + 1
            lp += bool(gate.last_report["lp"])
    lat_ms = np.array(lat) * 1000.0
    pp_ms = np.median(t_pp) * 1000.0
    med = float(np.median(lat_ms))
    print(f"machine: {os.cpu_count()} cores; feeder SimBench 1-MV-rural--0-sw ({len(net.bus)} buses, "
          f"{len(net.line)} lines); fleet 200 devices; batch {a.batch} commands; {a.checks} checks")
    print(f"gate latency: median {med:.2f} ms, p99 {np.percentile(lat_ms, 99):.2f} ms, "
          f"max {lat_ms.max():.2f} ms (AC power flows per check: mean {np.mean(pfs):.2f}; "
          f"LP used in {lp}/{a.checks} checks; commands curtailed/rejected {cut})")
    print(f"reasons over all checks: {dict(sorted(reasons.items()))}")
    print(f"plain pandapower runpp on the same net: median {pp_ms:.2f} ms (30 runs)")
    print(f"ratio gate median / one plain runpp: {med / pp_ms:.2f}")
    print(f"target median < 20 ms: {'met' if med < 20 else 'NOT met'}")


if __name__ == "__main__":
    main()
