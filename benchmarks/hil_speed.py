"""HIL speed: lockstep speed-up for cigre_mv_day with N Modbus devices and the RTU
(simulated seconds per wall second, protocol time share), against the twin alone (no
controller, no protocols) in the same run; and real-time step jitter for a run of the same
fleet (p50/p99/max lateness).

    .venv/bin/python benchmarks/hil_speed.py [--devices 200] [--sim-s 3600] [--rt-s 300]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time


def scenario(devices: int, sim_s: float):
    from scenarios.load import load_scenario

    s = load_scenario("scenarios/cigre_mv_day.yaml")
    s.duration_s = sim_s
    s.controller.enabled = True
    s.controller.cycle_s = 60.0
    s.controller.objective = "dr"
    total = sum(g.count for g in s.fleet if g.kind in ("pv", "battery"))
    keep = []
    for g in s.fleet:
        if g.kind in ("pv", "battery"):
            g.count = max(1, round(devices * g.count / total))
            g.link = "modbus"
            g.record_devices = 0
            keep.append(g)
    s.fleet = keep
    s.dr_events = []
    return s


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=200)
    ap.add_argument("--sim-s", type=float, default=3600.0)
    ap.add_argument("--rt-s", type=float, default=300.0, help="real-time run length (0: skip)")
    a = ap.parse_args()
    from hil.coordinator import run_hil
    from twin.simulation import Twin

    print(f"machine: {os.cpu_count()} cores")
    s = scenario(a.devices, a.sim_s)
    n = sum(g.count for g in s.fleet)
    tw = Twin(s)
    t0 = time.perf_counter()
    tw.run()
    base = a.sim_s / (time.perf_counter() - t0)
    print(f"baseline twin alone ({n} devices, no protocols): {base:.1f} sim s / wall s")
    with tempfile.TemporaryDirectory() as d:
        summary, _ = run_hil(s, d, record=False)
    h = summary["hil"]
    print(f"lockstep HIL ({n} Modbus devices + RTU, controller process, cycle 60 s): "
          f"{h['sim_s_per_wall_s']} sim s / wall s (x{h['sim_s_per_wall_s'] / base:.2f} of twin alone); "
          f"protocol share {100 * h['protocol_share']:.1f} % of wall time "
          f"(link I/O {h['link_io_s']} s + channel {h['channel_s']} s of {h['wall_s']} s); "
          f"controller cycle p50 {h['cycle_ms_p50']} ms, p99 {h['cycle_ms_p99']} ms")
    if a.rt_s > 0:
        s2 = scenario(a.devices, a.rt_s)
        with tempfile.TemporaryDirectory() as d:
            summary, _ = run_hil(s2, d, mode="realtime", record=False)
        rt = summary["hil"]["realtime"]
        print(f"real time ({n} devices, {a.rt_s:g} s, step {s2.device_step_s:g} s): lateness "
              f"p50 {rt['lateness_p50_ms']} ms, p99 {rt['lateness_p99_ms']} ms, max {rt['lateness_max_ms']} ms; "
              f"step compute p99 {rt['compute_p99_ms']} ms vs budget {1e3 * rt['step_wall_s']:g} ms; "
              f"overruns {rt['overruns']}, fell behind: {rt['fell_behind']}")


if __name__ == "__main__":
    main()
