"""The Controller and its cycle, a pipeline:

    read -> data quality -> estimate -> command sources -> merge by priority -> safety gate
    -> write -> historian

One `cycle(t)` does exactly one pass at clock time t (the HIL coordinator calls it with a
SteppedClock); `run(stop)` repeats it on the cycle period with the WallClock. The command
sources (controller/sources/: emergency, operator, DR program, volt/VAR, schedule) each give
`commands(t, state)`; the merge keeps one command per setpoint by source priority; the gate is
the only path to `DeviceLink.write`. A command the gate ramp-limits is carried to its target
over the following cycles. Each part's time is measured and stored per cycle. The controller
is built by controller.assembly.assemble.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import numpy as np

from controller.acquisition import Acquisition
from controller.commands import Command, GateResult
from controller.field import FieldIO
from controller.historian import Historian
from controller.sources import merge
from controller.sources.dr import DrProgram, DrState
from controller.sources.emergency import EmergencySource
from controller.sources.operator import OperatorSource
from controller.sources.schedule import ScheduleSource
from controller.safety.stage import GateStage
from controller.state import FleetState, empty_group, group_infos
from controller.tcl_dispatch import TclDispatcher

log = logging.getLogger("controller.cycle")

__all__ = ["Controller", "CycleSettings", "DrState"]


@dataclass
class CycleSettings:
    cycle_s: float = 60.0
    optimize_every_s: float = 900.0  # 0: no optimiser
    telemetry_every_s: float = 0.0  # historian telemetry sampling; 0: off
    dr_gain: float = 0.6  # integral gain on the metered DR shortfall (per cycle)
    write_deadband: float = 1e-3  # setpoint change below this is not re-sent
    refresh_s: float = 300.0  # re-send an unchanged setpoint this often
    objective: str = "cost"
    restore_spread_s: float = 600.0  # emergency restore: TCL cohorts over it, batteries at its end


class Controller:
    """links: {group: DeviceLink} (one link may serve several groups). `gate` is required: the
    SafetyGate (controller.assembly builds it), or a PassThroughGate asked for by name.
    feeder_net/feeder_limits: the controller's own feeder model (API one-line, volt/VAR)."""

    def __init__(self, links: dict, clock, gate, historian: Historian | None = None,
                 settings: CycleSettings | None = None, scheduler=None, snapshot_fn=None,
                 feeder_net=None, feeder_limits=None, extra_sources=(), quality=None):
        """extra_sources: callables ctl -> command source (controller/sources/); quality: the
        DataQuality checks (controller/quality.py; default thresholds when None)."""
        self.links = links
        self.clock = clock
        self.hist = historian or Historian(":memory:", "NORMAL")
        self.feeder_net, self.feeder_limits = feeder_net, feeder_limits
        self.cfg = settings or CycleSettings()
        self.scheduler = scheduler
        self.lock = threading.RLock()
        infos = {}
        for link in {id(l): l for l in links.values()}.values():
            infos.update(group_infos(link.devices()))
        missing = [g for g in links if g not in infos]
        if missing:
            raise ValueError(f"links name groups without devices: {missing}")
        self.state = FleetState(clock.now(), {g: empty_group(g, infos[g]) for g in links})
        self._index = {d: (g, j) for g, gs in self.state.groups.items() for j, d in enumerate(gs.ids)}
        self.tcl = TclDispatcher(self.state)  # TCL groups: baseline, margin, switching law
        self.n_cycle = self.hist.last_cycle()
        self.acquisition = Acquisition(quality)  # rediscovered ratings, data-quality checks (issue 17)
        self.stage = GateStage(gate, snapshot_fn, self.hist)  # the only path to the writes
        self.io = FieldIO(links, self.state, self.hist, self.cfg, self._index)
        self.carry: dict[tuple[str, str], Command] = {}  # ramp-limited, on their way to target
        self.schedule_src = ScheduleSource(self, scheduler)  # reads dr_program/emergency_src lazily
        self.dr_program = DrProgram(self)
        self.emergency_src = EmergencySource(self)
        self.operator = OperatorSource()
        # priority order: emergency, operator, DR, export limit, volt/VAR, schedule (lower number wins)
        extra = [make(self) for make in extra_sources]  # volt/VAR, export limit (controller.assembly)
        self.sources = sorted([self.emergency_src, self.operator, self.dr_program, *extra,
                               self.schedule_src], key=lambda s: -s.priority)
        self.priority = {s.name: s.priority for s in self.sources}
        self.cycle_ms: list[float] = []
        self.last_report: dict = {}
        self._resume()

    # --- what the API and reports read ------------------------------------------------------------
    @property
    def gate(self):
        return self.stage.gate

    @property
    def snapshot_fn(self):
        return self.stage.snapshot_fn

    @property
    def last_gate(self) -> GateResult | None:
        return self.stage.last_gate

    @property
    def gate_totals(self) -> dict:
        return self.stage.gate_totals

    @property
    def last_sent(self) -> dict:
        return self.io.last_sent

    @property
    def dr(self) -> dict[str, DrState]:
        return self.dr_program.events

    @property
    def emergency(self) -> dict | None:
        return self.emergency_src.emergency

    @property
    def schedule(self) -> dict | None:
        return self.schedule_src.schedule

    @property
    def base_set(self) -> dict:
        return self.schedule_src.base_set

    @property
    def operator_cmds(self) -> list[Command]:
        return self.operator.pending

    def margin(self) -> dict:
        return self.emergency_src.margin()

    def dr_summary(self) -> dict:
        return self.dr_program.summary()

    # --- restart ------------------------------------------------------------------------------
    def _resume(self) -> None:
        """Pick up DR events, the schedule, an emergency and the out-of-service list."""
        self.dr_program.resume()
        self.emergency_src.resume()
        for dev in self.hist.out_of_service():
            if dev in self._index:
                g, j = self._index[dev]
                self.state.groups[g].in_service[j] = False
        s = self.schedule_src.resume()
        if self.dr or s or self.emergency or self.emergency_src.restoring:
            self.hist.log_event(self.clock.now(), "controller_resumed", cycle=self.n_cycle,
                                dr_events=sorted(self.dr), schedule_id=s and s["id"],
                                emergency=self.emergency is not None)

    # --- operator / API actions (thread-safe) ---------------------------------------------------
    def add_dr_event(self, event_id: str, start_t: float, duration_s: float, reduction_kw: float,
                     groups: list[str] | None = None, source: str = "api", opt: str = "in") -> DrState:
        return self.dr_program.add(event_id, start_t, duration_s, reduction_kw, groups, source, opt)

    def modify_dr_event(self, event_id: str, **changes) -> DrState:
        return self.dr_program.modify(event_id, **changes)

    def cancel_dr_event(self, event_id: str) -> bool:
        return self.dr_program.cancel(event_id)

    def set_opt(self, event_id: str, opt: str) -> bool:
        return self.dr_program.set_opt(event_id, opt)

    def set_in_service(self, device_id: str, in_service: bool, by: str = "operator") -> None:
        if device_id not in self._index:
            raise KeyError(f"unknown device {device_id!r}")
        with self.lock:
            g, j = self._index[device_id]
            self.state.groups[g].in_service[j] = in_service
            self.hist.set_service(device_id, in_service, by, self.clock.now())

    def set_emergency(self, active: bool, by: str = "operator", reason: str = "") -> dict:
        """Shed all flexibility (the emergency plan: margin, shed, hold and response time), or
        start the plan's staged restore; returns the figures."""
        with self.lock:
            src = self.emergency_src
            return src.shed(by, reason) if active else src.restore(by, reason)

    def emergency_plan(self, reason: str = "operator") -> dict:
        """Margin, shed, hold time and response time of a full shed now (controller.emergency)."""
        try:
            return self.emergency_src.plan_figures(self.emergency_src.make_plan(reason))
        except Exception as e:  # noqa: BLE001 - planning is reporting
            log.warning("emergency plan failed: %s", e)
            return {"plan_error": str(e)[:200]}

    def operator_command(self, cmd: Command) -> None:
        if cmd.device_id not in self._index:
            raise KeyError(f"unknown device {cmd.device_id!r}")
        self.operator.add(cmd)

    # --- the cycle --------------------------------------------------------------------------------
    def cycle(self, t: float | None = None) -> dict:
        with self.lock:
            return self._cycle(self.clock.now() if t is None else float(t))

    def _cycle(self, t: float) -> dict:
        tm = {}
        t0 = time.perf_counter()
        self.n_cycle += 1
        self.io.read(t)
        self.acquisition.after_read(t, self.state, self.links, self.hist)
        t1 = time.perf_counter()
        tm["read_ms"] = 1e3 * (t1 - t0)
        self.state.t = t
        n_unavail = self.io.availability(t)
        self.tcl.observe(t, self.state)
        t2 = time.perf_counter()
        tm["estimate_ms"] = 1e3 * (t2 - t1)
        cmds: list[Command] = list(self.carry.values())
        for src in self.sources:  # lowest priority first: the merge lets the later one win ties
            cmds += src.commands(t, self.state)
            if src is self.schedule_src:
                t3 = time.perf_counter()
                tm["optimize_ms"] = 1e3 * (t3 - t2)
        cmds = merge(cmds, self.priority)
        t4 = time.perf_counter()
        tm["dr_ms"] = 1e3 * (t4 - t3)
        result = self.stage.check(t, cmds, self.state)
        for g in self.tcl.note_gate(result):  # a gate without a TCL model: keep them out
            self.hist.raise_alarm(t, "tcl_refused_by_gate", g, "safety gate rejects TCL force setpoints")
        self._carry(result)
        t5 = time.perf_counter()
        tm["gate_ms"] = 1e3 * (t5 - t4)
        sp_rows = self.io.write(t, result.to_send())
        t6 = time.perf_counter()
        tm["write_ms"] = 1e3 * (t6 - t5)
        tm["total_ms"] = 1e3 * (t6 - t0)
        dec_rows = [(d.command.device_id, d.command.setpoint, d.command.value, d.verdict, d.value,
                     d.command.source, ",".join(d.reasons)) for d in result.decisions
                    if d.verdict != "accepted"]
        self.hist.record_cycle(self.n_cycle, t, tm, self.io.telemetry_rows(t), sp_rows, dec_rows,
                               self.dr_program.perf, (len(cmds), sum(r[4] for r in sp_rows), n_unavail))
        self.cycle_ms.append(tm["total_ms"])
        self.last_report = {"cycle": self.n_cycle, "t": t, **{k: round(v, 3) for k, v in tm.items()},
                            "commands": len(cmds), "written": sum(r[4] for r in sp_rows),
                            "rejected": len(result.rejected), "unavailable": n_unavail,
                            "gate_basis": self.stage.basis.get("basis")}
        log.debug("cycle %d: %s", self.n_cycle, self.last_report)
        return self.last_report

    def _carry(self, result: GateResult) -> None:
        """Commands the gate cut only for their ramp rate go on next cycle (same source and
        priority) until the gate lets the target through; anything else ends the carry."""
        for d in result.decisions:
            k = (d.command.device_id, d.command.setpoint)
            if d.verdict == "curtailed" and d.reasons == ["ramp_limit"]:
                self.carry[k] = d.command
            else:
                self.carry.pop(k, None)

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
    def kpis(self) -> dict:
        ms = np.asarray(self.cycle_ms) if self.cycle_ms else np.zeros(1)
        return {"cycles": len(self.cycle_ms), "cycle_ms_mean": round(float(ms.mean()), 3),
                "cycle_ms_max": round(float(ms.max()), 3),
                "alarms": len(self.hist.alarms()), "gate": self.gate_name(),
                "gate_totals": dict(self.gate_totals)}

    def gate_name(self) -> str:
        return type(self.gate).__name__
