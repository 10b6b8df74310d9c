"""Schedule command source: the rolling schedule (controller/scheduling.py), re-optimised
every `optimize_every_s` (not while a DR event runs) and kept in the historian so a restart
resumes it; each cycle sends the setpoints of the current step. `base_set` (group -> the
scheduled p_set_kw now) is what DR and emergencies hand batteries back to."""

from __future__ import annotations

import logging

import numpy as np

from controller.commands import Command

log = logging.getLogger("controller.schedule")


class ScheduleSource:
    name, priority = "dispatch", 3

    def __init__(self, scheduler, hist, optimize_every_s: float, busy=lambda t: False):
        self.scheduler = scheduler
        self.hist = hist
        self.every_s = optimize_every_s
        self.busy = busy  # t -> True while the schedule must not be re-planned (DR event)
        self.schedule: dict | None = None
        self.base_set: dict[str, np.ndarray] = {}
        self._next_t = -np.inf

    def resume(self) -> dict | None:
        s = self.hist.latest_schedule()
        if s is not None:
            self.schedule = {"t0": s["t0"], "step_s": s["step_s"], "data": s["data"]}
        return s

    def _optimise(self, t: float, state) -> None:
        self._next_t = t + self.every_s
        try:
            s = self.scheduler.optimize(t, state)
        except Exception as e:  # noqa: BLE001 - a failed solve keeps the previous schedule
            log.warning("optimise failed at %.0f: %s", t, e)
            self.hist.raise_alarm(t, "optimizer_failed", None, str(e)[:300])
            return
        if s is not None:
            self.hist.add_schedule(t, s["t0"], s["step_s"], s["kind"], s["data"])
            self.schedule = {"t0": s["t0"], "step_s": s["step_s"], "data": s["data"]}

    def commands(self, t: float, state) -> list[Command]:
        if self.scheduler is not None and t >= self._next_t and not self.busy(t):
            self._optimise(t, state)
        s = self.schedule
        self.base_set = {}
        if not s:
            return []
        k = int((t - s["t0"]) // s["step_s"])
        out = []
        for g, per in s["data"].get("setpoints", {}).items():
            gs = state.groups.get(g)
            if gs is None:
                continue
            name, series = per["setpoint"], np.asarray(per["values"], float)
            if not (0 <= k < series.shape[1]):
                continue
            vals = series[:, k]
            if name == "p_set_kw":
                self.base_set[g] = vals
            out += [Command(gs.ids[j], name, float(vals[j]), self.name, "schedule")
                    for j in np.flatnonzero(gs.usable())]
        return out
