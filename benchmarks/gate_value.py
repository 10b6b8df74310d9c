"""What the safety gate costs and what it buys, on scenarios/pv_overvoltage.yaml.

The "unconstrained optimum" of the price signal at noon is to export everything: every PV
inverter at 100 % and every battery discharging at full power. Run the twin twice, once with
those commands written straight to the devices, once with the same commands passed through
`SafetyGate` each controller cycle. Prints violation counts (power-flow intervals with any
bus/branch outside limits) and the export revenue kept, with and without the gate.

    .venv/bin/python benchmarks/gate_value.py [--duration-s 10800] [--cycle-s 60]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from controller.commands import Command
from controller.safety import GridSnapshot, SafetyConfig, SafetyGate
from controller.safety.state import GATE_TELEMETRY
from scenarios.load import load_scenario
from twin.simulation import Twin

SCENARIO = ROOT / "scenarios" / "pv_overvoltage.yaml"


def snapshot_from_twin(twin, now_s: float | None = None, bus_noise_pct: float = 0.0,
                       rng=None) -> GridSnapshot:
    """The gate's view built from the twin: base load per bus from the last power flow (the
    feeder's own loads and generators, i.e. what a perfect estimator would give, optionally
    with multiplicative noise) and every device's telemetry and ratings."""
    net = twin.net
    own = net.load.index.isin(twin.pf._own_load_rows)
    res = net.res_load
    bus = [net.load.bus[own].to_numpy()]
    p = [res.p_mw[own].to_numpy() * 1000.0]
    q = [res.q_mvar[own].to_numpy() * 1000.0]
    if len(net.sgen):
        bus.append(net.sgen.bus.to_numpy())
        p.append(-net.res_sgen.p_mw.to_numpy() * 1000.0)
        q.append(-net.res_sgen.q_mvar.to_numpy() * 1000.0)
    bus, p, q = np.concatenate(bus), np.concatenate(p), np.concatenate(q)
    if bus_noise_pct:
        rng = rng or np.random.default_rng(0)
        p = p * (1 + bus_noise_pct / 100 * rng.standard_normal(p.size))
    groups = []
    for name, f in twin.fleets.items():
        rat = {}
        for k in ("p_max_kw", "s_rated_kva", "q_max_kvar", "p_nom_kw", "flex_share"):
            if hasattr(f, k):
                rat[k] = np.asarray(getattr(f, k), float)
        tel = {k: np.asarray(v, float) for k, v in f.telemetry().items()
               if k in GATE_TELEMETRY}
        groups.append({"name": name, "kind": f.KIND, "bus": f.bus, "p_kw": f.p_kw.copy(),
                           "q_kvar": f.q_kvar.copy(), "available": f.available.copy(),
                           "ratings": rat, "telemetry": tel})
    t = twin.grid.t_s
    return GridSnapshot.from_groups(t, twin.t_s if now_s is None else now_s, bus, p, q, groups)


def optimum_commands(twin) -> list[Command]:
    """Export everything: PV uncurtailed, batteries discharging at full power."""
    cmds = []
    for name, f in twin.fleets.items():
        if f.KIND == "pv":
            cmds += [Command(f"{name}/{i}", "p_limit_pct", 100.0) for i in range(f.n)]
        elif f.KIND == "battery":
            cmds += [Command(f"{name}/{i}", "p_set_kw", float(-f.p_max_kw[i])) for i in range(f.n)]
    return cmds


def write(twin, cmds):
    for c in cmds:
        group, idx = c.device_id.split("/")
        twin.fleets[group].write(c.setpoint, int(idx), c.value)


def run(gated: bool, duration_s: float | None = None, cycle_s: float = 60.0,
        config: SafetyConfig | None = None) -> dict:
    sc = load_scenario(SCENARIO)
    if duration_s:
        sc = sc.model_copy(update={"duration_s": duration_s})
    twin = Twin(sc)
    gate = SafetyGate(twin.net, sc.feeder.limits, config) if gated else None
    stats = {"revenue_eur": 0.0, "export_kwh": 0.0, "lat_ms": [], "curtailed": 0, "rejected": 0,
             "before_first_cycle": None}

    def cycle(tw):
        if stats["before_first_cycle"] is None:  # the t=0 power flow runs before any command
            stats["before_first_cycle"] = tw.violation_intervals
        cmds = optimum_commands(tw)
        if gate is not None:
            res = gate.check(cmds, snapshot_from_twin(tw))
            stats["lat_ms"].append(gate.last_report["latency_ms"])
            stats["curtailed"] += len(res.curtailed)
            stats["rejected"] += len(res.rejected)
            cmds = res.to_send()
        write(tw, cmds)

    def meter(tw):
        fleet_kw = sum(float(f.p_kw.sum()) for f in tw.fleets.values())
        e_kwh = -fleet_kw * tw.dt_s / 3600.0
        stats["export_kwh"] += e_kwh
        stats["revenue_eur"] += e_kwh / 1000.0 * tw.prices.at(tw.t_s)

    twin.after_step.append(meter)
    twin.add_periodic(cycle_s, cycle)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        twin.run()
    res = twin.grid.result
    return {"violation_intervals": twin.violation_intervals - (stats["before_first_cycle"] or 0),
            "by_kind": dict(twin.violation_by_kind),
            "pf_intervals": int(np.ceil(twin.n_steps / twin.pf_every)) - 1,
            "export_kwh": stats["export_kwh"], "revenue_eur": stats["revenue_eur"],
            "v_max_pu_end": float(np.nanmax(res.v_pu)), "gate_latency_ms": stats["lat_ms"],
            "curtailed": stats["curtailed"], "rejected": stats["rejected"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration-s", type=float, default=None)
    ap.add_argument("--cycle-s", type=float, default=60.0)
    a = ap.parse_args(argv)
    print(f"machine: {os.cpu_count()} cores; scenario {SCENARIO.name}")
    t = time.perf_counter()
    free = run(False, a.duration_s, a.cycle_s)
    t_free = time.perf_counter() - t
    t = time.perf_counter()
    gated = run(True, a.duration_s, a.cycle_s)
    t_gated = time.perf_counter() - t
    for name, r, dt in (("without gate", free, t_free), ("with gate", gated, t_gated)):
        print(f"{name:>13}: power-flow intervals with a violation, after the first cycle {r['violation_intervals']}/{r['pf_intervals']} "
              f"{r['by_kind']}, export {r['export_kwh']:.1f} kWh, revenue {r['revenue_eur']:.2f} EUR, "
              f"run {dt:.1f} s wall")
    lat = np.array(gated["gate_latency_ms"])
    print(f"gate: {len(lat)} checks, median {np.median(lat):.1f} ms, p99 {np.percentile(lat, 99):.1f} ms; "
          f"commands curtailed {gated['curtailed']}, rejected {gated['rejected']}")
    kept = gated["revenue_eur"] / free["revenue_eur"] if free["revenue_eur"] else float("nan")
    print(f"economic value kept with the gate: {100 * kept:.1f} % of the unconstrained revenue "
          f"(export {100 * gated['export_kwh'] / free['export_kwh']:.1f} % of kWh)")


if __name__ == "__main__":
    main()
