"""DR program command source: the controller's demand-response events, one model end to end.

Every way an event arrives (scenario, service config, API, OpenADR) creates a `DrState` through
`DrProgram.add`; changes go through `modify`, `cancel` and `set_opt` (never fields), and all
of them are kept in the historian's dr_events table, so a restarted controller resumes them
with the samples it had metered (dr_performance). Each cycle `commands(t, state)` moves the
events through pending -> active -> completed, meters the delivery (device-level baseline,
controller.kinds), corrects the allocation target with an integral term on the shortfall and
allocates the cut over the participating devices in proportion to their headroom; TCL groups
go through their switching law (controller/tcl_dispatch.py). Devices are handed back at the end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from controller.commands import Command
from controller.kinds import DR_ALL, KINDS, allocate, delivered_kw

log = logging.getLogger("controller.dr")
KEEP = object()  # modify(): leave the groups as they are (None means every group)


@dataclass
class DrState:
    """A DR event as the cycle sees it (persisted in the historian's dr_events table)."""

    id: str
    start_t: float
    duration_s: float
    reduction_kw: float
    groups: list[str] | None = None
    source: str = "api"
    status: str = "pending"  # pending | active | completed | cancelled
    opt: str = "in"  # in | out
    correction_kw: float = 0.0
    samples: list[float] = field(default_factory=list)  # metered kW, one per cycle in the event
    participants: dict[str, np.ndarray] = field(default_factory=dict)  # group -> mask
    ev_cf: dict[str, np.ndarray] = field(default_factory=dict)  # EV counterfactual need, kWh
    last_base: dict[str, np.ndarray] = field(default_factory=dict)  # baseline of the last interval
    meter: dict = field(default_factory=dict)  # meter-level performance at completion (dr/metered.py)

    @property
    def end_t(self) -> float:
        return self.start_t + self.duration_s

    def as_row(self) -> dict:
        return {"id": self.id, "start_t": self.start_t, "duration_s": self.duration_s,
                "reduction_kw": self.reduction_kw, "groups": self.groups, "source": self.source,
                "status": self.status, "opt": self.opt}

    def performance(self) -> dict:
        d = float(np.mean(self.samples)) if self.samples else 0.0
        return {"requested_kw": self.reduction_kw, "delivered_kw": round(d, 3),
                "delivery_pct": round(100.0 * d / self.reduction_kw, 2), "cycles": len(self.samples),
                "status": self.status, **self.meter}


class DrProgram:
    name, priority = "dr", 2

    def __init__(self, ctl):
        self.ctl = ctl  # state, hist, tcl, cfg, lock, clock; schedule.base_set; emergency.active
        self.events: dict[str, DrState] = {}
        self.perf: list[tuple] = []  # (event id, requested kW, metered kW) of the last cycle

    # --- the one way in and the changes ----------------------------------------------------------
    def add(self, event_id: str, start_t: float, duration_s: float, reduction_kw: float,
            groups: list[str] | None = None, source: str = "api", opt: str = "in") -> DrState:
        ctl = self.ctl
        if not (reduction_kw > 0 and duration_s > 0):
            raise ValueError(f"dr event {event_id!r}: reduction_kw and duration_s must be > 0")
        unknown = [g for g in groups or [] if g not in ctl.state.groups]
        if unknown:
            raise ValueError(f"dr event {event_id!r}: unknown group {unknown[0]!r}")
        with ctl.lock:
            cur = self.events.get(event_id)
            if cur is not None and cur.status in ("active", "completed"):
                raise ValueError(f"dr event {event_id!r} exists and is {cur.status}")
            ev = DrState(event_id, float(start_t), float(duration_s), float(reduction_kw),
                         groups, source, "pending", opt)
            self.events[event_id] = ev
            ctl.hist.upsert_dr_event(ev.as_row(), ctl.clock.now())
        return ev

    def modify(self, event_id: str, reduction_kw: float | None = None, end_t: float | None = None,
               opt: str | None = None, start_t: float | None = None, groups=KEEP) -> DrState:
        """Change a pending or running event (an OpenADR modification, an API edit); the start
        and the groups only while it is pending (a running event keeps its devices)."""
        ctl = self.ctl
        with ctl.lock:
            ev = self.events.get(event_id)
            if ev is None or ev.status in ("completed", "cancelled"):
                raise ValueError(f"dr event {event_id!r}: nothing to modify")
            if (start_t is not None and start_t != ev.start_t) or (groups is not KEEP and groups != ev.groups):
                if ev.status != "pending":
                    raise ValueError(f"dr event {event_id!r}: start and groups of a running event cannot change")
            unknown = [g for g in (groups if groups is not KEEP else None) or [] if g not in ctl.state.groups]
            if unknown:
                raise ValueError(f"dr event {event_id!r}: unknown group {unknown[0]!r}")
            if reduction_kw is not None and not reduction_kw > 0:
                raise ValueError(f"dr event {event_id!r}: reduction_kw must be > 0")
            if opt is not None and opt not in ("in", "out"):
                raise ValueError(f"dr event {event_id!r}: opt must be 'in' or 'out', not {opt!r}")
            start = ev.start_t if start_t is None else float(start_t)
            end = ev.end_t if end_t is None else float(end_t)
            if not end > start:
                raise ValueError(f"dr event {event_id!r}: end must be after the start")
            if reduction_kw is not None:
                ev.reduction_kw = float(reduction_kw)
            ev.start_t, ev.duration_s = start, end - start
            if groups is not KEEP:
                ev.groups = None if groups is None else list(groups)
            if opt is not None:
                ev.opt = opt
            ctl.hist.upsert_dr_event(ev.as_row(), ctl.clock.now())
            return ev

    def cancel(self, event_id: str) -> bool:
        ctl = self.ctl
        with ctl.lock:
            ev = self.events.get(event_id)
            if ev is None or ev.status in ("completed", "cancelled"):
                return False
            ev.status = "cancelled"
            ctl.hist.set_dr_status(event_id, "cancelled", ctl.clock.now())
            return True

    def set_opt(self, event_id: str, opt: str) -> bool:
        try:
            self.modify(event_id, opt=opt)
        except ValueError:
            return False
        return True

    def resume(self) -> None:
        """Events still pending or running in the historian, with the deliveries metered so
        far (the event's performance goes on from there) and a TCL group's frozen baseline."""
        hist, groups = self.ctl.hist, self.ctl.state.groups
        for r in hist.dr_events(("pending", "active")):
            ev = DrState(r["id"], r["start_t"], r["duration_s"], r["reduction_kw"], r["groups"],
                         r["source"], r["status"], r["opt"])
            ev.samples = [float(p["delivered_kw"]) for p in hist.dr_performance(ev.id)
                          if p["delivered_kw"] is not None]
            self.events[ev.id] = ev
        for r in hist.events_of("dr_tcl_baseline"):
            ev, g = self.events.get(r["event_id"]), groups.get(r["group"])
            if ev is not None and g is not None and len(r["p_kw"]) == g.n:
                ev.last_base[r["group"]] = np.asarray(r["p_kw"], float)

    def summary(self) -> dict:
        return {e.id: e.performance() for e in self.events.values()}

    # --- the cycle -----------------------------------------------------------------------------
    def commands(self, t: float, state) -> list[Command]:
        ctl = self.ctl
        cmds: list[Command] = []
        self.perf = []
        for ev in list(self.events.values()):
            if ev.status in ("completed", "cancelled"):
                if ev.participants:
                    cmds += self._release(ev, "dr_end")
                continue
            if ev.status == "active" and t > ev.start_t:
                measured = self._metered(ev)
                ev.samples.append(measured)
                self.perf.append((ev.id, ev.reduction_kw, measured))
                ev.correction_kw = float(np.clip(
                    ev.correction_kw + ctl.cfg.dr_gain * (ev.reduction_kw - measured),
                    -ev.reduction_kw, ev.reduction_kw))
            if t >= ev.end_t:
                ev.status = "completed"
                ctl.hist.set_dr_status(ev.id, "completed", t)
                self._assess(ev)
                ctl.hist.log_event(t, "dr_event_completed", event_id=ev.id, **ev.performance())
                cmds += self._release(ev, "dr_end")
                continue
            if t < ev.start_t or ev.opt != "in":
                continue
            if ev.status == "pending":
                ev.status = "active"
                ctl.hist.set_dr_status(ev.id, "active", t)
                ctl.hist.log_event(t, "dr_event_active", event_id=ev.id, reduction_kw=ev.reduction_kw)
            cmds += self._allocate(ev, t)
        return cmds

    def active(self, t: float | None = None) -> bool:
        return any(e.status == "active" for e in self.events.values())

    def _groups(self, ev: DrState):
        return [g for g in self.ctl.state.groups.values()
                if g.kind in DR_ALL and (ev.groups is None or g.group in ev.groups)]

    def _assess(self, ev: DrState) -> None:
        """Meter-level performance (10-of-10 baseline from the historian) into ev.meter."""
        from controller.dr.metered import assess

        meters = [d for g in self.ctl.state.groups.values() if g.kind == "meter" for d in g.ids]
        fleet = [d for g in self._groups(ev) for d in g.ids]
        try:
            ev.meter = assess(self.ctl.hist, ev.id, ev.start_t, ev.end_t, ev.reduction_kw, meters,
                              fleet, ev.performance())
        except Exception as e:  # noqa: BLE001 - reporting only: never stops the cycle
            log.warning("meter-level assessment of %s failed: %s", ev.id, e)
            ev.meter = {"baseline_method": "device-level", "baseline_note": f"assessment failed: {e}"[:200]}

    def _metered(self, ev: DrState) -> float:
        base_set = self.ctl.schedule_src.base_set
        total = 0.0
        for g in self._groups(ev):
            mask = ev.participants.get(g.group)
            if mask is None:
                continue
            base = ev.last_base.get(g.group) if g.kind in ("ev", "battery", "tcl") else None
            if base is None:
                base = KINDS[g.kind].baseline_kw(g, base_set.get(g.group))
            total += delivered_kw(g, base, mask & g.usable())
        return total

    def _allocate(self, ev: DrState, t: float) -> list[Command]:
        ctl = self.ctl
        base_set = ctl.schedule_src.base_set
        hold_h = max(ev.end_t - t, ctl.cfg.cycle_s) / 3600.0
        groups = self._groups(ev)
        dt_h = ctl.cfg.cycle_s / 3600.0
        base = {}
        for g in groups:
            k = KINDS[g.kind]
            if g.kind == "ev":  # counterfactual need tracked from the event start
                ev.ev_cf[g.group] = cf = k.counterfactual(g, ev.ev_cf.get(g.group))
                base[g.group] = k.baseline_kw(g, base_set.get(g.group), cf_need_kwh=cf, dt_h=dt_h)
                ev.ev_cf[g.group] = cf - np.nan_to_num(base[g.group]) * dt_h
            elif k.group_dispatch:  # pre-event mean, frozen at the event's first cycle
                b = ev.last_base.get(g.group)
                if b is None:  # kept in the historian: a restarted controller meters against it
                    b = ctl.tcl.baseline(g.group)
                    ctl.hist.log_event(t, "dr_tcl_baseline", event_id=ev.id, group=g.group,
                                       p_kw=np.round(np.nan_to_num(b), 4).tolist())
                base[g.group] = b
            else:
                base[g.group] = k.baseline_kw(g, base_set.get(g.group))
            ev.last_base[g.group] = base[g.group]
        head = {g.group: ctl.tcl.models[g.group].headroom_kw(base[g.group], hold_h)
                if KINDS[g.kind].group_dispatch else KINDS[g.kind].headroom_kw(g, base[g.group], hold_h)
                for g in groups}
        cut = allocate(ev.reduction_kw + ev.correction_kw, head)
        cmds = []
        for g in groups:
            usable = g.usable()
            ev.participants[g.group] = usable.copy()
            k = KINDS[g.kind]
            if k.group_dispatch:
                cmds += ctl.tcl.models[g.group].dispatch(t, base[g.group], float(cut[g.group].sum()),
                                                         self.name, ev.id)
                ctl.tcl.record(ev.id, g.group, t, float(cut[g.group].sum()), base[g.group])
                continue
            vals = k.setpoint_for_cut(g, base[g.group], cut[g.group])
            cmds += [Command(g.ids[j], k.dr_setpoint, float(vals[j]), self.name, ev.id)
                     for j in np.flatnonzero(usable) if np.isfinite(vals[j])]
        return cmds

    def _release(self, ev: DrState, why: str) -> list[Command]:
        """Hand the event's devices back (not those another running event or an emergency
        holds); TCL groups rebound-capped over several cycles."""
        ctl = self.ctl
        cmds, keep = [], {}
        busy = {g for e in self.events.values() if e.status == "active" and e is not ev
                for g in (e.participants or {})}
        for gname, mask in ev.participants.items():
            if gname in busy or ctl.emergency_src.active:
                continue
            g = ctl.state.groups[gname]
            k = KINDS[g.kind]
            if k.group_dispatch:
                m = ctl.tcl.models[gname]
                cmds += m.release_capped(ev.last_base[gname], self.name, why)
                if m.held.any():
                    keep[gname] = mask
                continue
            vals = k.released(g, ctl.schedule_src.base_set.get(gname))
            cmds += [Command(g.ids[j], k.dr_setpoint, float(vals[j]), self.name, why)
                     for j in np.flatnonzero(mask & g.usable())]
        ev.participants = keep
        return cmds
