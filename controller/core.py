"""The Controller and its cycle: read -> estimate -> (periodically) optimise -> DR/emergency
-> safety gate -> write -> historian.

One `cycle(t)` does exactly one pass at clock time t (the HIL coordinator calls it with a
SteppedClock); `run(stop)` repeats it on the cycle period with the WallClock. The gate is
the only path to `DeviceLink.write`. Each part's time is measured and stored per cycle.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from controller.acquisition import Acquisition
from controller.commands import Command, Decision, GateResult
from controller.historian import Historian
from controller.kinds import DR_ALL, DR_KINDS, KINDS, allocate, delivered_kw
from controller.state import (
    Q_NAME,
    FleetState,
    GroupState,
    empty_group,
    fill_from_values,
    group_infos,
)
from controller.tcl_dispatch import TclDispatcher

log = logging.getLogger("controller.cycle")

PRIORITY = {"emergency": 0, "operator": 1, "dr": 2, "dispatch": 3}


@dataclass
class CycleSettings:
    cycle_s: float = 60.0
    optimize_every_s: float = 900.0  # 0: no optimiser
    telemetry_every_s: float = 0.0  # historian telemetry sampling; 0: off
    dr_gain: float = 0.6  # integral gain on the metered DR shortfall (per cycle)
    write_deadband: float = 1e-3  # setpoint change below this is not re-sent
    refresh_s: float = 300.0  # re-send an unchanged setpoint this often
    objective: str = "cost"


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


class Controller:
    """links: {group: DeviceLink} (one link may serve several groups). `gate` is required: the
    SafetyGate (controller.assembly builds it), or a PassThroughGate asked for by name.
    feeder_net/feeder_limits: the controller's own feeder model (API one-line, volt/VAR)."""

    def __init__(self, links: dict, clock, gate, historian: Historian | None = None,
                 settings: CycleSettings | None = None, scheduler=None, snapshot_fn=None,
                 feeder_net=None, feeder_limits=None):
        if gate is None:
            raise ValueError("a controller needs a gate: SafetyGate, or PassThroughGate by name")
        self.links = links
        self.clock = clock
        self.hist = historian or Historian(":memory:", "NORMAL")
        self.gate = gate
        self.feeder_net, self.feeder_limits = feeder_net, feeder_limits
        self.snapshot_fn = snapshot_fn  # state -> what gate.check wants (None: the FleetState)
        self.cfg = settings or CycleSettings()
        self.scheduler = scheduler
        self.lock = threading.RLock()
        infos = {}
        seen = set()
        for link in links.values():
            if id(link) in seen:
                continue
            seen.add(id(link))
            infos.update(group_infos(link.devices()))
        missing = [g for g in links if g not in infos]
        if missing:
            raise ValueError(f"links name groups without devices: {missing}")
        self.state = FleetState(clock.now(), {g: empty_group(g, infos[g]) for g in links})
        self._index = {d: (g, j) for g, gs in self.state.groups.items() for j, d in enumerate(gs.ids)}
        self.tcl = TclDispatcher(self.state)  # TCL groups: baseline, margin, switching law
        self.n_cycle = self.hist.last_cycle()
        self.acquisition = Acquisition()  # rediscovered ratings, data-quality checks (issue 17)
        self.last_sent: dict[tuple[str, str], tuple[float, float]] = {}
        self.dirty: dict[tuple[str, str], str] = {}  # setpoints changed by DR/emergency -> source
        self.dr: dict[str, DrState] = {}
        self.base_set: dict[str, np.ndarray] = {}  # battery group -> scheduled p_set_kw
        self.schedule: dict | None = None
        self.emergency: dict | None = None
        self.operator_cmds: list[Command] = []
        self._next_opt_t = -np.inf
        self._last_tel_t = -np.inf
        self.cycle_ms: list[float] = []
        self.last_report: dict = {}
        self.last_gate = None
        self.gate_totals = {"accepted": 0, "curtailed": 0, "rejected": 0}
        self._gate_alarmed: set[str] = set()
        self._resume()

    # --- restart ------------------------------------------------------------------------------
    def _resume(self) -> None:
        """Pick up DR events, the schedule and the out-of-service list from the historian."""
        for r in self.hist.dr_events(("pending", "active")):
            self.dr[r["id"]] = DrState(r["id"], r["start_t"], r["duration_s"], r["reduction_kw"],
                                       r["groups"], r["source"], r["status"], r["opt"])
        for r in self.hist.events_of("dr_tcl_baseline"):
            ev = self.dr.get(r["event_id"])
            g = self.state.groups.get(r["group"])
            if ev is not None and g is not None and len(r["p_kw"]) == g.n:
                ev.last_base[r["group"]] = np.asarray(r["p_kw"], float)
        for dev in self.hist.out_of_service():
            if dev in self._index:
                g, j = self._index[dev]
                self.state.groups[g].in_service[j] = False
        s = self.hist.latest_schedule()
        if s is not None:
            self._apply_schedule(s["data"], s["t0"], s["step_s"])
        if self.dr or s:
            self.hist.log_event(self.clock.now(), "controller_resumed", cycle=self.n_cycle,
                                dr_events=sorted(self.dr), schedule_id=s and s["id"])

    # --- operator / API actions (thread-safe) ---------------------------------------------------
    def add_dr_event(self, event_id: str, start_t: float, duration_s: float, reduction_kw: float,
                     groups: list[str] | None = None, source: str = "api", opt: str = "in") -> DrState:
        if reduction_kw <= 0 or duration_s <= 0:
            raise ValueError(f"dr event {event_id!r}: reduction_kw and duration_s must be > 0")
        unknown = [g for g in groups or [] if g not in self.state.groups]
        if unknown:
            raise ValueError(f"dr event {event_id!r}: unknown group {unknown[0]!r}")
        with self.lock:
            if event_id in self.dr and self.dr[event_id].status in ("active", "completed"):
                raise ValueError(f"dr event {event_id!r} exists and is {self.dr[event_id].status}")
            ev = DrState(event_id, float(start_t), float(duration_s), float(reduction_kw),
                         groups, source, "pending", opt)
            self.dr[event_id] = ev
            self.hist.upsert_dr_event(ev.as_row(), self.clock.now())
        return ev

    def cancel_dr_event(self, event_id: str) -> bool:
        with self.lock:
            ev = self.dr.get(event_id)
            if ev is None or ev.status in ("completed", "cancelled"):
                return False
            ev.status = "cancelled"
            self.hist.set_dr_status(event_id, "cancelled", self.clock.now())
            return True

    def set_opt(self, event_id: str, opt: str) -> bool:
        with self.lock:
            ev = self.dr.get(event_id)
            if ev is None:
                return False
            ev.opt = opt
            self.hist.upsert_dr_event(ev.as_row(), self.clock.now())
            return True

    def set_in_service(self, device_id: str, in_service: bool, by: str = "operator") -> None:
        if device_id not in self._index:
            raise KeyError(f"unknown device {device_id!r}")
        with self.lock:
            g, j = self._index[device_id]
            self.state.groups[g].in_service[j] = in_service
            self.hist.set_service(device_id, in_service, by, self.clock.now())

    def set_emergency(self, active: bool, by: str = "operator", reason: str = "") -> dict:
        """Shed (or release) all flexibility; returns the margin, with the emergency plan's
        shed, hold time and response time (controller.emergency) when shedding."""
        with self.lock:
            m = self.margin()
            if active:
                plan = self.emergency_plan(reason or "operator")
                m.update(plan)
            self.emergency = {"since": self.clock.now(), "by": by, "reason": reason,
                              **({k: m[k] for k in ("shed_kw", "hold_s", "response_s")} if active else {})
                              } if active else None
            self.hist.log_event(self.clock.now(), "emergency_" + ("on" if active else "off"),
                                by=by, reason=reason, **{k: v for k, v in m.items() if k != "resources"})
            return m

    def emergency_plan(self, reason: str = "operator") -> dict:
        """Margin, shed, hold time and response time of a full shed now (controller.emergency)."""
        from controller.emergency import plan_emergency

        try:
            plan = plan_emergency(self.state.groups.values(), self.clock.now(), reason=reason,
                                  tcl_groups=self.tcl.tcl_groups(self.clock.now()),
                                  base_set=self.base_set)
        except Exception as e:  # planning is reporting: a failure must not block the shed
            log.warning("emergency plan failed: %s", e)
            return {"plan_error": str(e)[:200]}
        return {"plan_margin_kw": round(plan.margin_kw, 3), "shed_kw": round(plan.shed_kw, 3),
                "hold_s": round(plan.hold_s, 1) if np.isfinite(plan.hold_s) else None,
                "response_s": plan.response_s,
                "by_kind": {k: round(sum(it.margin_kw for it in plan.items if it.kind == k), 3)
                            for k in sorted({it.kind for it in plan.items})}}

    def operator_command(self, cmd: Command) -> None:
        if cmd.device_id not in self._index:
            raise KeyError(f"unknown device {cmd.device_id!r}")
        with self.lock:
            self.operator_cmds.append(cmd)

    def margin(self) -> dict:
        """Adjustable load-reduction margin now (kW) and how long batteries can hold theirs."""
        total, bat_kw, bat_kwh = 0.0, 0.0, 0.0
        for g in self.state.groups.values():
            if g.kind not in DR_KINDS:
                continue
            k = KINDS[g.kind]
            base = k.baseline_kw(g, self.base_set.get(g.group))
            h = k.headroom_kw(g, base, 1e-3 if g.kind == "battery" else 1.0)
            total += float(h.sum())
            if g.kind == "battery":
                bat_kw += float(h.sum())
                bat_kwh += float(np.nan_to_num(k.energy_kwh(g))[g.usable()].sum())
        tcl_kw = self.tcl.margin_kw()
        total += tcl_kw
        return {"margin_kw": round(total, 3), "battery_kw": round(bat_kw, 3), "tcl_kw": round(tcl_kw, 3),
                "battery_hold_s": round(3600.0 * bat_kwh / bat_kw, 1) if bat_kw > 0 else 0.0}

    # --- the cycle --------------------------------------------------------------------------------
    def cycle(self, t: float | None = None) -> dict:
        with self.lock:
            return self._cycle(self.clock.now() if t is None else float(t))

    def _cycle(self, t: float) -> dict:
        tm = {}
        t0 = time.perf_counter()
        self.n_cycle += 1
        self._read(t)
        self.acquisition.after_read(t, self.state, self.links, self.hist)
        t1 = time.perf_counter()
        tm["read_ms"] = 1e3 * (t1 - t0)
        self.state.t = t
        n_unavail = self._estimate(t)
        self.tcl.observe(t, self.state)
        t2 = time.perf_counter()
        tm["estimate_ms"] = 1e3 * (t2 - t1)
        cmds: list[Command] = []
        in_event = any(e.status == "active" for e in self.dr.values())
        if self.scheduler is not None and t >= self._next_opt_t and not in_event:
            self._next_opt_t = t + self.cfg.optimize_every_s
            try:
                sched = self.scheduler.optimize(t, self.state)
                if sched is not None:
                    self.hist.add_schedule(t, sched["t0"], sched["step_s"], sched["kind"], sched["data"])
                    self._apply_schedule(sched["data"], sched["t0"], sched["step_s"])
            except Exception as e:  # a failed solve keeps the previous schedule, never stops us
                log.warning("optimise failed at %.0f: %s", t, e)
                self.hist.raise_alarm(t, "optimizer_failed", None, str(e)[:300])
        cmds += self._schedule_commands(t)
        t3 = time.perf_counter()
        tm["optimize_ms"] = 1e3 * (t3 - t2)
        dr_cmds, perf = self._demand_response(t)
        cmds += dr_cmds
        cmds += self._emergency_commands()
        cmds += self.operator_cmds
        self.operator_cmds = []
        cmds = self._merge(cmds)
        t4 = time.perf_counter()
        tm["dr_ms"] = 1e3 * (t4 - t3)
        result = self._gate(t, cmds)
        for g in self.tcl.note_gate(result):  # a gate without a TCL model: keep them out
            self.hist.raise_alarm(t, "tcl_refused_by_gate", g, "safety gate rejects TCL force setpoints")
        t5 = time.perf_counter()
        tm["gate_ms"] = 1e3 * (t5 - t4)
        sp_rows = self._write(t, result.to_send())
        t6 = time.perf_counter()
        tm["write_ms"] = 1e3 * (t6 - t5)
        tm["total_ms"] = 1e3 * (t6 - t0)
        dec_rows = [(d.command.device_id, d.command.setpoint, d.command.value, d.verdict, d.value,
                     d.command.source, ",".join(d.reasons)) for d in result.decisions
                    if d.verdict != "accepted"]
        self.hist.record_cycle(self.n_cycle, t, tm, self._telemetry_rows(t), sp_rows, dec_rows,
                               perf, (len(cmds), sum(r[4] for r in sp_rows), n_unavail))
        self.cycle_ms.append(tm["total_ms"])
        self.last_report = {"cycle": self.n_cycle, "t": t, **{k: round(v, 3) for k, v in tm.items()},
                            "commands": len(cmds), "written": sum(r[4] for r in sp_rows),
                            "rejected": len(result.rejected), "unavailable": n_unavail}
        log.debug("cycle %d: %s", self.n_cycle, self.last_report)
        return self.last_report

    # --- parts ----------------------------------------------------------------------------------------
    def _gate(self, t: float, cmds: list[Command]) -> GateResult:
        """The gate's verdict on the batch; a failing gate rejects everything (fail safe).
        Rejections and curtailments raise alarms (one per device while it lasts) and an event."""
        try:
            state = self.snapshot_fn(self.state) if self.snapshot_fn else self.state
            result = self.gate.check(cmds, state)
        except Exception as e:  # never write what the gate did not see through
            log.warning("safety gate failed at %.0f: %s", t, e)
            self.hist.raise_alarm(t, "gate_failed", None, f"{type(e).__name__}: {e}"[:300])
            result = GateResult([Decision(c, "rejected", None, ["gate_error"]) for c in cmds])
        else:
            self.hist.clear_alarm("gate_failed", None)
        self.last_gate = result
        counts = {"accepted": 0, "curtailed": 0, "rejected": 0}
        reasons: dict[str, int] = {}
        for d in result.decisions:
            counts[d.verdict] = counts.get(d.verdict, 0) + 1
            dev = d.command.device_id
            if d.verdict == "accepted":
                if dev in self._gate_alarmed:
                    self._gate_alarmed.discard(dev)
                    self.hist.clear_alarm("gate_rejected", dev)
                    self.hist.clear_alarm("gate_curtailed", dev)
                continue
            for r in d.reasons:
                reasons[r] = reasons.get(r, 0) + 1
            self._gate_alarmed.add(dev)
            self.hist.raise_alarm(t, "gate_" + d.verdict, dev,
                                  f"{d.command.setpoint}={d.command.value:g} ({d.command.source}) "
                                  f"{d.verdict}" + ("" if d.value is None else f" to {d.value:g}")
                                  + f": {','.join(d.reasons) or 'no reason given'}")
        for k, v in counts.items():
            self.gate_totals[k] = self.gate_totals.get(k, 0) + v
        if counts["curtailed"] or counts["rejected"]:
            self.hist.log_event(t, "gate", curtailed=counts["curtailed"], rejected=counts["rejected"],
                                accepted=counts["accepted"], reasons=reasons)
        return result

    def _read(self, t: float) -> None:
        done = set()
        for gname, link in self.links.items():
            if id(link) in done:
                continue
            done.add(id(link))
            mine = [g for g, l in self.links.items() if l is link]
            try:
                if hasattr(link, "read_groups"):
                    data = link.read_groups()
                    for g in mine:
                        gs = self.state.groups[g]
                        gs.values, gs.quality, gs.available = data[g]
                        gs.t = np.full(gs.n, t)
                else:
                    readings, status = link.read(), link.status()
                    for g in mine:
                        fill_from_values(self.state.groups[g], readings, status)
            except Exception as e:  # the whole link failed: its devices are unavailable
                log.warning("read of %s failed: %s", mine, e)
                for g in mine:
                    gs = self.state.groups[g]
                    gs.available[:] = False
                    for q in gs.quality.values():
                        q[:] = 3
                    for v in gs.values.values():
                        v[:] = np.nan
                self.hist.raise_alarm(t, "link_down", ",".join(mine), str(e)[:300])

    def _estimate(self, t: float) -> int:
        """Availability bookkeeping (alarms, forgetting setpoints of lost devices)."""
        n = 0
        for g in self.state.groups.values():
            down = ~g.available
            n += int(down.sum())
            prev = getattr(g, "_prev_avail", None)
            if prev is not None:
                for j in np.flatnonzero(prev & down):
                    self.hist.raise_alarm(t, "device_unavailable", g.ids[j], "device stopped answering")
                    for k in [k for k in self.last_sent if k[0] == g.ids[j]]:
                        del self.last_sent[k]
                for j in np.flatnonzero(~prev & g.available):
                    self.hist.clear_alarm("device_unavailable", g.ids[j])
                    self.hist.log_event(t, "device_back", device_id=g.ids[j])
            g._prev_avail = g.available.copy()
        return n

    def _apply_schedule(self, data: dict, t0: float, step_s: float) -> None:
        self.schedule = {"t0": t0, "step_s": step_s, "data": data}

    def _schedule_commands(self, t: float) -> list[Command]:
        """Battery (and other) setpoints of the current schedule step."""
        s = self.schedule
        self.base_set = {}
        if not s:
            return []
        k = int((t - s["t0"]) // s["step_s"])
        out = []
        for g, per in s["data"].get("setpoints", {}).items():
            gs = self.state.groups.get(g)
            if gs is None:
                continue
            name, series = per["setpoint"], np.asarray(per["values"], float)
            if not (0 <= k < series.shape[1]):
                continue
            vals = series[:, k]
            if name == "p_set_kw":
                self.base_set[g] = vals
            usable = gs.usable()
            out += [Command(gs.ids[j], name, float(vals[j]), "dispatch", "schedule")
                    for j in np.flatnonzero(usable)]
        return out

    def _demand_response(self, t: float) -> tuple[list[Command], list[tuple]]:
        cmds: list[Command] = []
        perf: list[tuple] = []
        for ev in list(self.dr.values()):
            if ev.status in ("completed", "cancelled"):
                if ev.participants:
                    cmds += self._release(ev, "dr_end")
                continue
            if ev.status == "active" and ev.samples is not None and t > ev.start_t:
                measured = self._metered(ev)
                ev.samples.append(measured)
                perf.append((ev.id, ev.reduction_kw, measured))
                ev.correction_kw = float(np.clip(
                    ev.correction_kw + self.cfg.dr_gain * (ev.reduction_kw - measured),
                    -ev.reduction_kw, ev.reduction_kw))
            if t >= ev.end_t:
                ev.status = "completed"
                self.hist.set_dr_status(ev.id, "completed", t)
                self._assess(ev)
                self.hist.log_event(t, "dr_event_completed", event_id=ev.id, **ev.performance())
                cmds += self._release(ev, "dr_end")
                continue
            if t < ev.start_t or ev.opt != "in":
                continue
            if ev.status == "pending":
                ev.status = "active"
                self.hist.set_dr_status(ev.id, "active", t)
                self.hist.log_event(t, "dr_event_active", event_id=ev.id, reduction_kw=ev.reduction_kw)
            cmds += self._dr_allocate(ev, t)
        return cmds, perf

    def _assess(self, ev: DrState) -> None:
        """Meter-level performance (10-of-10 baseline from the historian) into ev.meter."""
        from controller.dr.metered import assess

        meters = [d for g in self.state.groups.values() if g.kind == "meter" for d in g.ids]
        fleet = [d for g in self._dr_groups(ev) for d in g.ids]
        try:
            ev.meter = assess(self.hist, ev.id, ev.start_t, ev.end_t, ev.reduction_kw, meters, fleet,
                              ev.performance())
        except Exception as e:  # noqa: BLE001 - reporting only: never stops the cycle
            log.warning("meter-level assessment of %s failed: %s", ev.id, e)
            ev.meter = {"baseline_method": "device-level", "baseline_note": f"assessment failed: {e}"[:200]}

    def _dr_groups(self, ev: DrState) -> list[GroupState]:
        return [g for g in self.state.groups.values()
                if g.kind in DR_ALL and (ev.groups is None or g.group in ev.groups)]

    def _metered(self, ev: DrState) -> float:
        total = 0.0
        for g in self._dr_groups(ev):
            mask = ev.participants.get(g.group)
            if mask is None:
                continue
            base = ev.last_base.get(g.group) if g.kind in ("ev", "battery", "tcl") else None
            if base is None:
                base = KINDS[g.kind].baseline_kw(g, self.base_set.get(g.group))
            total += delivered_kw(g, base, mask & g.usable())
        return total

    def _dr_allocate(self, ev: DrState, t: float) -> list[Command]:
        hold_h = max(ev.end_t - t, self.cfg.cycle_s) / 3600.0
        groups = self._dr_groups(ev)
        dt_h = self.cfg.cycle_s / 3600.0
        base = {}
        for g in groups:
            if g.kind == "ev":
                ev.ev_cf[g.group] = cf = KINDS["ev"].counterfactual(g, ev.ev_cf.get(g.group))
                base[g.group] = KINDS["ev"].baseline_kw(g, cf_need_kwh=cf, dt_h=dt_h)
                ev.ev_cf[g.group] = cf - np.nan_to_num(base[g.group]) * dt_h
            elif g.kind == "tcl":  # pre-event mean, frozen at the event's first cycle
                b = ev.last_base.get(g.group)
                if b is None:  # kept in the historian: a restarted controller meters against it
                    b = self.tcl.baseline(g.group)
                    self.hist.log_event(t, "dr_tcl_baseline", event_id=ev.id, group=g.group,
                                        p_kw=np.round(np.nan_to_num(b), 4).tolist())
                base[g.group] = b
            else:
                base[g.group] = KINDS[g.kind].baseline_kw(g, self.base_set.get(g.group))
            ev.last_base[g.group] = base[g.group]
        head = {g.group: self.tcl.models[g.group].headroom_kw(base[g.group], hold_h) if g.kind == "tcl"
                else KINDS[g.kind].headroom_kw(g, base[g.group], hold_h) for g in groups}
        need = ev.reduction_kw + ev.correction_kw
        cut = allocate(need, head)
        cmds = []
        for g in groups:
            usable = g.usable()
            ev.participants[g.group] = usable.copy()
            if g.kind == "tcl":
                tcmds = self.tcl.models[g.group].dispatch(t, base[g.group], float(cut[g.group].sum()),
                                                          "dr", ev.id)
                self.tcl.record(ev.id, g.group, t, float(cut[g.group].sum()), base[g.group])
                for c in tcmds:
                    self.dirty[(c.device_id, c.setpoint)] = "dr"
                cmds += tcmds
                continue
            vals = KINDS[g.kind].setpoint_for_cut(g, base[g.group], cut[g.group])
            name = KINDS[g.kind].dr_setpoint
            for j in np.flatnonzero(usable):
                if np.isfinite(vals[j]):
                    cmds.append(Command(g.ids[j], name, float(vals[j]), "dr", ev.id))
                    self.dirty[(g.ids[j], name)] = "dr"
        return cmds

    def _release(self, ev: DrState, why: str) -> list[Command]:
        cmds = []
        keep = {}  # TCL groups still handing units back (rebound-capped, several cycles)
        busy = {g for e in self.dr.values() if e.status == "active" and e is not ev
                for g in (e.participants or {})}
        for gname, mask in ev.participants.items():
            if gname in busy or self.emergency:
                continue
            g = self.state.groups[gname]
            if g.kind == "tcl":
                m = self.tcl.models[gname]
                for c in m.release_capped(ev.last_base[gname], "dr", why):
                    self.dirty.pop((c.device_id, c.setpoint), None)
                    cmds.append(c)
                if m.held.any():
                    keep[gname] = mask
                continue
            vals = KINDS[g.kind].released(g, self.base_set.get(gname))
            name = KINDS[g.kind].dr_setpoint
            for j in np.flatnonzero(mask & g.usable()):
                cmds.append(Command(g.ids[j], name, float(vals[j]), "dr", why))
                self.dirty.pop((g.ids[j], name), None)
        ev.participants = keep
        return cmds

    def _emergency_commands(self) -> list[Command]:
        if not self.emergency:
            if any(src == "emergency" for src in self.dirty.values()):
                out = []
                for m in self.tcl.models.values():  # TCLs back in cohorts (cold-load pickup)
                    for c in m.release_all("emergency", "released", cohort=max(1, -(-m.n // 4))):
                        out.append(c)
                        self.dirty.pop((c.device_id, c.setpoint), None)
                for (dev, name), src in list(self.dirty.items()):
                    if src == "emergency" and name != "force":
                        g, j = self._index[dev]
                        gs = self.state.groups[g]
                        out.append(Command(dev, name, float(KINDS[gs.kind].released(gs, self.base_set.get(g))[j]),
                                           "emergency", "released"))
                        del self.dirty[(dev, name)]
                return out
            return []
        out = []
        for g in self.state.groups.values():
            if g.kind not in DR_KINDS:
                continue
            k = KINDS[g.kind]
            base = k.baseline_kw(g, self.base_set.get(g.group))
            h = k.headroom_kw(g, base, 1e-3)
            vals = k.setpoint_for_cut(g, base, h)
            name = k.dr_setpoint
            for j in np.flatnonzero(g.usable()):
                if np.isfinite(vals[j]):
                    out.append(Command(g.ids[j], name, float(vals[j]), "emergency", "shed"))
                    self.dirty[(g.ids[j], name)] = "emergency"
        for m in self.tcl.models.values():
            for c in m.emergency_commands(self.state.t):
                out.append(c)
                if c.value < 0:
                    self.dirty[(c.device_id, c.setpoint)] = "emergency"
                else:
                    self.dirty.pop((c.device_id, c.setpoint), None)
        return out

    @staticmethod
    def _merge(cmds: list[Command]) -> list[Command]:
        """One command per (device, setpoint): emergency > operator > dr > dispatch."""
        best: dict[tuple[str, str], Command] = {}
        for c in cmds:
            k = (c.device_id, c.setpoint)
            o = best.get(k)
            if o is None or PRIORITY.get(c.source, 9) <= PRIORITY.get(o.source, 9):
                best[k] = c
        return list(best.values())

    def _write(self, t: float, cmds: list[Command]) -> list[tuple]:
        rows = []
        for c in cmds:
            k = (c.device_id, c.setpoint)
            last = self.last_sent.get(k)
            if (last is not None and abs(last[0] - c.value) < self.cfg.write_deadband
                    and t - last[1] < self.cfg.refresh_s):
                continue
            g, _ = self._index.get(c.device_id, (c.device_id.rpartition("/")[0], 0))
            link = self.links.get(g)
            ok = False
            if link is not None:
                try:
                    ok = bool(link.write(c.device_id, c.setpoint, c.value))
                except Exception as e:  # a write fault is reported, the cycle goes on
                    log.info("write %s.%s failed: %s", c.device_id, c.setpoint, e)
            if ok:
                self.last_sent[k] = (c.value, t)
            else:
                self.last_sent.pop(k, None)
            rows.append((c.device_id, c.setpoint, c.value, c.source, int(ok)))
        return rows

    def _telemetry_rows(self, t: float) -> list[tuple]:
        """Every cycle the feeder-head meter and RTU (a few values, the operator's head trend);
        every `telemetry_every_s` all devices (0: never)."""
        due = self.cfg.telemetry_every_s > 0 and t - self._last_tel_t >= self.cfg.telemetry_every_s - 1e-9
        if due:
            self._last_tel_t = t
        rows = []
        for g in self.state.groups.values():
            if not due and g.kind not in ("meter", "rtu"):
                continue
            for name, v in g.values.items():
                q = g.quality[name]
                for j, dev in enumerate(g.ids):
                    x = v[j]
                    rows.append((dev, name, None if not np.isfinite(x) else float(x), Q_NAME[int(q[j])]))
        return rows

    # --- running ----------------------------------------------------------------------------------
    def run(self, stop: threading.Event, max_cycles: int | None = None) -> None:
        """Cycle on the period of the clock until `stop` is set (field / serve mode)."""
        p = self.cfg.cycle_s
        nxt = np.ceil(self.clock.now() / p) * p
        done = 0
        while not stop.is_set() and (max_cycles is None or done < max_cycles):
            if not self.clock.sleep_until(nxt, timeout_s=min(p, 1.0)):
                continue
            now = self.clock.now()
            if now - nxt > p:  # overran: skip the missed slots, never queue them
                log.warning("cycle overrun: %.1f s behind, skipping", now - nxt)
                nxt = np.floor(now / p) * p
            try:
                self.cycle(nxt)
            except Exception:
                log.exception("cycle %d failed", self.n_cycle)
            nxt += p
            done += 1

    # --- reporting ----------------------------------------------------------------------------------
    def dr_summary(self) -> dict:
        return {e.id: e.performance() for e in self.dr.values()}

    def kpis(self) -> dict:
        ms = np.asarray(self.cycle_ms) if self.cycle_ms else np.zeros(1)
        return {"cycles": len(self.cycle_ms), "cycle_ms_mean": round(float(ms.mean()), 3),
                "cycle_ms_max": round(float(ms.max()), 3),
                "alarms": len(self.hist.alarms()), "gate": self.gate_name(),
                "gate_totals": dict(self.gate_totals)}

    def gate_name(self) -> str:
        return type(self.gate).__name__
