"""Schedule command source: the rolling fleet schedule (controller/scheduling.py), re-optimised
every `optimize_every_s` and early when an EV plugs in or leaves (not while a DR event runs, at
most every `MIN_REPLAN_S`), kept in the historian so a restart resumes it. Each cycle it sends
the current step's setpoints: battery `p_set_kw`, EV `p_max_set_kw` (plugged-in cars), PV
`p_limit_pct` and flexible-load `curtail_pct` (only around the steps the plan curtails, so the
gate does not check hundreds of unchanged 100 % / 0 % values every cycle), and moves each TCL
group toward its planned power through the group's switching law (controller/tcl_dispatch.py;
not while DR or an emergency drives the group).

A failed or timed-out solve keeps the last plan (alarm `optimizer_failed`, event
`schedule_fallback`). `base_set` (group -> the scheduled value of the kind's DR setpoint now)
is what DR and emergencies measure against and hand devices back to."""

from __future__ import annotations

import logging

import numpy as np

from controller.commands import Command
from controller.kinds import KINDS

log = logging.getLogger("controller.schedule")

MIN_REPLAN_S = 300.0  # an EV plugging in re-plans early, at most this often
QUIET = ("p_limit_pct", "curtail_pct")  # sent only around the plan's active steps


class ScheduleSource:
    name, priority = "dispatch", 3

    def __init__(self, ctl, scheduler):
        self.ctl = ctl  # hist, cfg, dr_program, emergency_src, tcl
        self.scheduler = scheduler
        self.hist = ctl.hist
        self.every_s = ctl.cfg.optimize_every_s
        if scheduler is not None and hasattr(scheduler, "tcl"):
            scheduler.tcl = ctl.tcl  # the TCL groups' models: virtual-battery bounds
        self.schedule: dict | None = None
        self.base_set: dict[str, np.ndarray] = {}
        self._next_t = -np.inf
        self._last_t = -np.inf
        self._plugged: frozenset = frozenset()
        self.fallbacks = 0
        self._curtailing: dict[str, bool] = {}  # QUIET group -> the plan curtailed it last cycle
        self._tcl_driving: set[str] = set()  # TCL groups the plan holds units of
        self._cache: tuple = (None, {})  # (plan, its arrays)
        self._now: float | None = None  # time of the cycle being served

    def busy(self, t: float) -> bool:
        """No re-planning while a DR event runs (its baseline is the plan in force)."""
        return self.ctl.dr_program.active(t)

    def tcl_free(self) -> bool:
        """TCL groups follow the plan only while no DR event or emergency holds them."""
        c = self.ctl
        return not (c.dr_program.active() or any(e.participants for e in c.dr.values())
                    or c.emergency_src.active or c.emergency_src.restoring is not None)

    def resume(self) -> dict | None:
        s = self.hist.latest_schedule()
        if s is not None:
            self.schedule = {"t0": s["t0"], "step_s": s["step_s"], "data": s["data"]}
        return s

    def _series(self, s: dict) -> dict:
        """{group: (setpoint, values (step x device), active steps or None)}, once per plan."""
        if self._cache[0] is not s:
            self._cache = (s, {g: (per["setpoint"], _by_step(per["values"]),
                                   set(per["active_steps"]) if "active_steps" in per else None)
                               for g, per in s["data"].get("setpoints", {}).items()})
        return self._cache[1]

    def planned(self, group: str, setpoint: str, t: float | None = None) -> np.ndarray | None:
        """The plan's `setpoint` values for `group` at t (default: this cycle's), per device;
        None when the plan has none for it."""
        s = self.schedule
        t = self._now if t is None else t
        if not s or t is None:
            return None
        name, series, _ = self._series(s).get(group, (None, None, None))
        k = int((t - s["t0"]) // s["step_s"])
        return series[k] if name == setpoint and 0 <= k < series.shape[0] else None

    def _plugged_now(self, state) -> frozenset:
        return frozenset(d for g in state.groups.values() if g.kind == "ev"
                         for d, c in zip(g.ids, g.get("connected") > 0.5) if c)

    def _optimise(self, t: float, state) -> None:
        self._next_t = t + self.every_s
        self._last_t = t
        try:
            windows = [(e.start_t, e.end_t) for e in self.ctl.dr.values()
                       if e.status in ("pending", "active") and e.opt == "in" and e.end_t > t]
            s = self.scheduler.optimize(t, state, dr_windows=windows)
        except Exception as e:  # noqa: BLE001 - a failed solve keeps the previous schedule
            self.fallbacks += 1
            log.warning("optimise failed at %.0f: %s; keeping the last plan", t, e)
            self.hist.raise_alarm(t, "optimizer_failed", None, str(e)[:300])
            self.hist.log_event(t, "schedule_fallback", error=str(e)[:300],
                                plan_t0=self.schedule and self.schedule["t0"])
            return
        if s is not None:
            self.hist.add_schedule(t, s["t0"], s["step_s"], s["kind"], s["data"])
            self.schedule = {"t0": s["t0"], "step_s": s["step_s"], "data": s["data"]}

    def commands(self, t: float, state) -> list[Command]:
        self._now = t
        if self.scheduler is not None and not self.busy(t):
            plugged = self._plugged_now(state)
            early = plugged != self._plugged and t >= self._last_t + MIN_REPLAN_S
            if t >= self._next_t or early:
                self._plugged = plugged
                self._optimise(t, state)
        s = self.schedule
        self.base_set = {}
        if not s:
            return []
        k = int((t - s["t0"]) // s["step_s"])
        data = s["data"]
        out = []
        for g, (name, series, act) in self._series(s).items():
            gs = state.groups.get(g)
            if gs is None or not (0 <= k < series.shape[0]):
                continue
            vals = series[k]
            if name == KINDS[gs.kind].dr_setpoint:
                self.base_set[g] = vals
            send = gs.usable()
            if name in QUIET:  # while the plan curtails, and once more to release
                on = act is None or k in act
                was = self._curtailing.get(g, False)
                self._curtailing[g] = on
                if not (on or was):
                    continue
            elif name == "p_max_set_kw":
                send &= gs.get("connected") > 0.5
            ids, v = gs.ids, vals.tolist()
            out += [Command(ids[j], name, v[j], self.name, "schedule") for j in np.flatnonzero(send).tolist()]
        targets = data.get("tcl_p_target_kw", {})
        if targets and self.tcl_free():
            active = data.get("tcl_active_steps", {})
            for g, series in targets.items():
                m = self.ctl.tcl.models.get(g)
                if m is None or not m.usable.any():
                    continue
                if 0 <= k < len(series) and k in set(active.get(g, range(len(series)))):
                    share = np.where(m.usable, float(series[k]) / m.usable.sum(), 0.0)
                    out += m.dispatch(t, share, 0.0, self.name, "schedule")
                    self._tcl_driving.add(g)
                elif g in self._tcl_driving:  # the plan is back at baseline: hand the units back
                    out += m.release_capped(self.ctl.tcl.baseline(g), self.name, "schedule released")
                    if not m.held.any():
                        self._tcl_driving.discard(g)
        return out


def _by_step(rows: list) -> np.ndarray:
    """A plan's (device x step) value rows as a (step x device) array; a row object shared by
    several devices (FleetScheduler._data) is converted once."""
    conv: dict[int, np.ndarray] = {}
    for r in rows:
        if id(r) not in conv:
            conv[id(r)] = np.asarray(r, float)
    return np.ascontiguousarray(np.array([conv[id(r)] for r in rows], float).T)
