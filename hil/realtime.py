"""Real-time mode: the twin advances one device step per wall-clock step (hardware in the
loop), the controller process cycles on its own wall clock. Reports step lateness (p50/p99/
max), overruns, and says loudly when the twin falls behind real time.

A plain wall-clock loop rather than simpy.rt: the twin's SimPy environment stays the same
one lockstep uses (`Twin.run_until`), and lateness is measured per step, not hidden.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from datetime import UTC

import numpy as np

from hil.jitter import lateness_stats


class ScenarioWallClock:
    """Scenario time that runs with the wall clock: start_epoch at wall0, `speed` x real time.

    Both processes build it from the same (start_epoch, wall0, speed), so their clocks agree
    to within the host's clock resolution."""

    def __init__(self, start_epoch: float, wall0: float, speed: float = 1.0):
        self.start_epoch, self.wall0, self.speed = float(start_epoch), float(wall0), float(speed)

    def now(self) -> float:
        return self.start_epoch + (time.time() - self.wall0) * self.speed

    def wall_at(self, t: float) -> float:
        return self.wall0 + (t - self.start_epoch) / self.speed

    def sleep_until(self, t: float, timeout_s: float | None = None) -> bool:
        wait = self.wall_at(t) - time.time()
        if timeout_s is not None and wait > timeout_s:
            time.sleep(max(timeout_s, 0.0))
            return False
        if wait > 0:
            time.sleep(wait)
        return True

    def utc(self):
        from datetime import datetime

        return datetime.fromtimestamp(self.now(), tz=UTC)


def warm_up(twin, speed: float = 1.0) -> float:
    """Run the twin's first step untimed (JIT compilation, first power flow) and return the
    wall0 that puts that step exactly on schedule, so lateness measures steady state."""
    if twin.step_index == 0:
        twin.run_until(twin.dt_s)
    return time.time() - twin.step_index * twin.dt_s / speed


def run_twin_realtime(twin, wall0: float, speed: float = 1.0, lock=None, behind_s: float | None = None,
                      warn=None, stop=None, progress=None) -> dict:
    """Step `twin` to its end on the wall clock; return the jitter/overrun summary.

    Step k (sim time k*dt) is due at wall0 + k*dt/speed. `behind_s` (default: one step or
    0.5 s, whichever is larger) is how late a step may start before the run counts as fallen
    behind; the first such step logs a 'realtime_behind' event and calls warn(message)."""
    dt = twin.dt_s
    step_wall = dt / speed
    behind_s = max(step_wall, 0.5) if behind_s is None else behind_s
    lock = lock if lock is not None else nullcontext()
    n = twin.n_steps - twin.step_index
    late = np.zeros(n)
    comp = np.zeros(n)
    behind = False
    k = 0
    for k in range(n):
        if stop is not None and stop():
            break
        step = twin.step_index
        due = wall0 + step * step_wall
        now = time.time()
        if due > now:
            time.sleep(due - now)
            now = time.time()
        late[k] = max(now - due, 0.0)
        if late[k] > behind_s and not behind:
            behind = True
            msg = (f"twin fell behind real time at t={twin.t_s:g} s: step started "
                   f"{late[k] * 1e3:.0f} ms late (allowed {behind_s * 1e3:.0f} ms)")
            twin.events.log(twin.t_s, "realtime_behind", lateness_ms=round(float(late[k]) * 1e3, 1),
                            threshold_ms=round(behind_s * 1e3, 1))
            if warn:
                warn(msg)
        t0 = time.perf_counter()
        with lock:
            twin.run_until((step + 1) * dt)
        comp[k] = time.perf_counter() - t0
        if progress and step % 60 == 0:
            progress(twin.t_s, twin.end_s)
    done = k + 1 if n else 0
    stats = lateness_stats(late[:done], comp[:done], step_wall, behind_s)
    stats["speed"] = speed
    if stats["fell_behind"]:
        twin.events.log(twin.t_s, "realtime_summary", fell_behind=True,
                        steps_behind=stats["steps_behind"], lateness_max_ms=stats["lateness_max_ms"])
    return stats


def rich_warn(message: str) -> None:
    """Loud, unmissable console warning (stderr) for a run that lost real time."""
    from rich.console import Console

    Console(stderr=True).print(f"[bold white on red] REAL-TIME LOST [/] [bold red]{message}[/]")


def run_realtime(session, speed: float = 1.0, progress=None, warn=None, behind_s: float | None = None) -> dict:
    """Real-time mode on an opened session: the controller process cycles on its own
    ScenarioWallClock while the twin steps on the wall clock; returns the 'hil' KPIs."""
    tw = session.twin
    s = tw.scenario
    t0 = time.perf_counter()
    if session.with_controller:
        session.start_controller("realtime", speed=speed)
    with session.lock:
        wall0 = warm_up(tw, speed)  # both sides count scenario time from here
    if session.ctl is not None:
        session.ctl.chan.send({"op": "go", "wall0": wall0})
    for act in s.hil.actions:
        tw.events.log(act.at_s, "action_skipped", action=act.action, reason="real-time mode")
    stats = run_twin_realtime(tw, wall0, speed, lock=session.lock, behind_s=behind_s,
                              warn=warn or rich_warn, progress=progress)
    wall = time.perf_counter() - t0
    return {"mode": "realtime", "wall_s": round(wall, 3), "realtime": stats,
            "fell_behind": stats.get("fell_behind", False), "endpoints": len(session.endpoints)}
