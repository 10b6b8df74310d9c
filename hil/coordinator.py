"""Lockstep coordinator: advance the twin to the next controller cycle, tick the controller
process's SteppedClock to the same instant, wait for its cycle (real Modbus/IEC 104 reads
and writes against the twin's emulators) to finish, repeat.

Faster than real time and deterministic for a given seed: the twin never moves while the
controller talks to it, and the controller never sees time it was not given.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

from hil.protocol import ChannelError
from hil.session import HilError, HilSession


def cycle_times(end_s: float, cycle_s: float) -> list[float]:
    """Scenario seconds at which the controller cycles: cycle_s, 2*cycle_s, ... < end_s."""
    n = int(math.ceil(end_s / cycle_s - 1e-9))
    return [k * cycle_s for k in range(1, n)]


def run_lockstep(session: HilSession, progress=None) -> dict:
    """Drive an opened session to the end in lockstep; return the 'hil' KPIs."""
    tw = session.twin
    s = tw.scenario
    start = s.start.timestamp()
    timeout = s.hil.cycle_timeout_s
    actions = sorted(s.hil.actions, key=lambda a: a.at_s)
    twin_s = 0.0
    wait_s = 0.0
    cycle_ms, io_ms = [], []
    reads = writes = 0
    t0 = time.perf_counter()
    if session.with_controller:
        session.start_controller("lockstep")
    setup_s = time.perf_counter() - t0
    seq = 0
    emergency: dict = {}
    for t in cycle_times(tw.end_s, s.controller.cycle_s) + [tw.end_s]:
        a = time.perf_counter()
        with session.lock:
            tw.run_until(t)
        twin_s += time.perf_counter() - a
        if emergency and "flex_p_after_kw" not in emergency and t >= emergency["measure_at_s"]:
            emergency.update(_flex_head(tw, "after"))
            emergency["shed_kw"] = round(emergency["flex_p_before_kw"] - emergency["flex_p_after_kw"], 3)
        if progress:
            progress(tw.t_s, tw.end_s)
        if session.ctl is None or t >= tw.end_s:
            continue
        while actions and actions[0].at_s <= t:
            act = actions.pop(0)
            if act.action == "emergency_shed" and not emergency:
                emergency = {"at_s": t, "measure_at_s": t + 2 * s.controller.cycle_s, **_flex_head(tw, "before")}
            _apply_action(session, act, t)
        seq += 1
        a = time.perf_counter()
        try:
            done = session.ctl.tick(start + t, seq, timeout)
        except ChannelError as e:
            tw.events.log(t, "controller_failed", error=str(e))
            raise HilError(f"controller cycle at t={t:g} s failed: {e}\n{session.ctl.log_tail(8)}") from None
        wait_s += time.perf_counter() - a
        cycle_ms.append(done.get("cycle_ms", np.nan))
        io_ms.append(done.get("io_ms", np.nan))
        reads += int(done.get("reads", 0))
        writes += int(done.get("writes", 0))
    wall = time.perf_counter() - t0
    cyc = np.asarray(cycle_ms, float)
    io = np.nansum(io_ms) / 1e3 if io_ms else 0.0
    channel_s = max(wait_s - np.nansum(cyc) / 1e3, 0.0) if cyc.size else 0.0
    pct = lambda q: round(float(np.nanpercentile(cyc, q)), 3) if cyc.size else None
    return {
        "mode": "lockstep",
        "cycles": int(cyc.size),
        "wall_s": round(wall, 3),
        "setup_s": round(setup_s, 3),
        "sim_s_per_wall_s": round(tw.t_s / wall, 2) if wall > 0 else None,
        "twin_s": round(twin_s, 3),
        "controller_wait_s": round(wait_s, 3),
        "link_io_s": round(io, 3),
        "channel_s": round(channel_s, 3),
        "protocol_share": round((io + channel_s) / wall, 4) if wall > 0 else None,
        "cycle_ms_p50": pct(50), "cycle_ms_p99": pct(99),
        "cycle_ms_max": round(float(np.nanmax(cyc)), 3) if cyc.size else None,
        "link_reads": reads, "link_writes": writes,
        "controller_restarts": max(session.ctl.starts - 1, 0) if session.ctl else 0,
        "endpoints": len(session.endpoints),
        **({"emergency": {k: v for k, v in emergency.items() if k != "measure_at_s"}} if emergency else {}),
    }


def _flex_head(tw, when: str) -> dict:
    """Flexible-fleet power (batteries, EVs, flexible loads; load convention) and feeder head P."""
    flex = sum(float(f.p_kw.sum()) for f in tw.fleets.values() if f.KIND in ("battery", "ev", "flex_load"))
    res = tw.grid.result
    head = float(res.p_head_kw) if res is not None else float("nan")
    return {f"flex_p_{when}_kw": round(flex, 3), f"head_p_{when}_kw": round(head, 3)}


def _apply_action(session: HilSession, act, t: float) -> None:
    tw = session.twin
    if act.action == "restart_controller":
        session.restart_controller(t, act.reason)
    else:
        ack = session.ctl.command(act.action, reason=act.reason)
        tw.events.log(t, "operator_action", action=act.action, reason=act.reason, ack=ack.get("result"))


def run_hil(scenario, out_root: str | Path = "runs", progress=None, mode: str | None = None,
            record: bool = True, speed: float = 1.0, warn=None) -> tuple[dict, Path]:
    """Run one scenario under HIL (lockstep or real time); returns (summary, results folder)."""
    from twin.results import run_dir

    mode = mode or scenario.hil.mode
    out = run_dir(out_root, scenario.name)
    session = HilSession(scenario, out, record=record)
    t0 = time.perf_counter()
    hil_kpis: dict = {}
    try:
        session.open()
        if mode == "lockstep":
            hil_kpis = run_lockstep(session, progress)
        else:
            from hil.realtime import run_realtime

            hil_kpis = run_realtime(session, speed=speed, progress=progress, warn=warn)
    finally:
        if session.twin is not None:
            session.close()
    wall = time.perf_counter() - t0
    summary = session.write_results(wall, hil_kpis)
    return summary, out
