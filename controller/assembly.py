"""The one place a controller is put together: `assemble(spec, links, clock, historian,
feeder_net, limits, price_fn)`. The field service (controller/service.py), the in-process
run (hil/direct.py) and the HIL controller process (hil/controller_adapter.py) all call it,
so the scheduler condition, the safety gate, the settings and the DR events given with the
spec are decided once. Nothing is set on the controller afterwards.

The safety gate is part of every controller: the real `SafetyGate` on the feeder model, or,
only when the spec says `safety_gate: false`, the explicitly named `PassThroughGate`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields
from datetime import UTC

from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.historian import Historian

log = logging.getLogger("controller.assembly")


@dataclass
class Spec:
    """What the controller is asked to be, whoever starts it (a scenario's `controller:` block
    with its `dr_events`, or a service config)."""

    cycle_s: float = 60.0
    optimize_every_s: float = 900.0  # 0: no schedule
    objective: str = "cost"  # cost | peak (battery schedule) | dr (no schedule)
    safety_gate: bool = True
    telemetry_every_s: float = 0.0  # historian telemetry sampling; 0: off
    dr_events: list = field(default_factory=list)  # objects with id, start, duration_s, reduction_kw, groups
    dr_source: str = "scenario"
    settings: dict = field(default_factory=dict)  # CycleSettings overrides (replays)
    volt_var: bool = True  # volt/VAR command source (with the safety gate)
    ev_departure_h: dict = field(default_factory=dict)  # {ev group: hour UTC} where chargers don't report it
    export_limit_kw: float | None = None  # most the feeder head may export: planned and held on the meter
    reconcile: str = "adopt"  # at start: setpoints held in the field (controller/reconcile.py)
    quality: dict = field(default_factory=dict)  # {kind: {KindChecks field: value}} (controller/quality.py)
    timezone: str = "UTC"  # the site's local clock: the schedule's profiles are learnt on it

    @classmethod
    def from_scenario(cls, s) -> Spec:
        c = s.controller
        return cls(c.cycle_s, c.optimize_every_s, c.objective, c.safety_gate, 0.0, list(s.dr_events),
                   export_limit_kw=c.export_limit_kw, timezone=getattr(s, "timezone", "UTC"))

    @classmethod
    def from_config(cls, cfg) -> Spec:
        return cls(cfg.cycle_s, cfg.optimize_every_s, cfg.objective, cfg.safety_gate,
                   cfg.historian.telemetry_every_s, list(cfg.dr_events), "config",
                   {"restore_spread_s": cfg.emergency.restore_spread_s}, reconcile=cfg.reconcile,
                   quality={k: q.overrides() for k, q in cfg.quality.items()},
                   ev_departure_h={d.group: d.departure_h for d in cfg.devices if d.departure_h is not None},
                   export_limit_kw=cfg.export_limit_kw, timezone=cfg.timezone)

    def cycle_settings(self) -> CycleSettings:
        cs = CycleSettings(cycle_s=self.cycle_s, optimize_every_s=self.optimize_every_s or 1e18,
                           telemetry_every_s=self.telemetry_every_s, objective=self.objective)
        known = {f.name: f for f in fields(CycleSettings)}
        for k, v in self.settings.items():
            if k not in known:
                raise ValueError(f"unknown controller setting {k!r}: expected one of {sorted(known)}")
            setattr(cs, k, type(getattr(cs, k))(v))
        return cs


def assemble(spec: Spec, links: dict, clock, historian: Historian | None = None, feeder_net=None,
             limits=None, price_fn=None) -> Controller:
    """A ready controller: links {group: DeviceLink}; price_fn(t_epoch_array) -> EUR/MWh (None:
    no battery schedule); feeder_net/limits: the controller's own feeder model and its limits."""
    hist = historian or Historian(":memory:", "NORMAL")
    devices = [d for link in {id(l): l for l in links.values()}.values() for d in link.devices()]
    kinds = {d.kind: d.device_id for d in devices}
    groups: dict[str, tuple[str, list[str]]] = {}
    for d in devices:
        groups.setdefault(d.group, (d.kind, []))[1].append(d.device_id)
    gate, snapshot_fn = _gate(spec, feeder_net, limits, clock)
    extra = []
    if spec.volt_var and snapshot_fn is not None:  # needs the SafetyGate's feeder model
        from controller.sources.voltvar import VoltVarSource

        extra.append(lambda c: VoltVarSource(c))
    if spec.export_limit_kw is not None:  # the plan keeps within it; this holds it on the meter
        from controller.sources.export_limit import ExportLimitSource

        extra.append(lambda c: ExportLimitSource(c, spec.export_limit_kw))
    from controller.quality import DataQuality, checks_from
    from controller.reconcile import reconcile

    ctl = Controller(links, clock, gate, historian=hist, settings=spec.cycle_settings(),
                     scheduler=_scheduler(spec, kinds, groups, price_fn, hist, clock), snapshot_fn=snapshot_fn,
                     feeder_net=feeder_net, feeder_limits=limits, extra_sources=extra,
                     quality=DataQuality(checks_from(spec.quality)))
    known = {r["id"] for r in hist.dr_events()}
    for ev in spec.dr_events:
        if ev.id in known:
            continue  # taken (or finished) in an earlier run with this historian
        start = ev.start if ev.start.tzinfo else ev.start.replace(tzinfo=UTC)
        ctl.add_dr_event(ev.id, start.timestamp(), ev.duration_s, ev.reduction_kw, ev.groups,
                         source=spec.dr_source)
        hist.log_event(clock.now(), f"dr_event_from_{spec.dr_source}", event_id=ev.id)
    reconcile(ctl, spec.reconcile)  # what the field holds against what the controller believes
    return ctl


def _gate(spec: Spec, net, limits, clock):
    """(gate, snapshot_fn): the SafetyGate on the feeder model, or the pass-through gate when
    the spec turns the gate off."""
    if not spec.safety_gate:
        log.warning("safety gate off (safety_gate: false): commands go to devices unchecked")
        return PassThroughGate(), None
    if net is None or limits is None:
        raise ValueError("the safety gate needs the controller's feeder model and limits")
    from controller.safety.base_load import make_gate

    return make_gate(net, limits, clock)


def _scheduler(spec: Spec, kinds: dict, groups: dict, price_fn, hist, clock):
    """The rolling fleet schedule (batteries, EVs, PV, flexible loads, TCL groups) against a
    head-load forecast learnt from the head meter (refilled from the historian), when the spec
    asks for one and the fleet has a controllable class; PV and flexible-load profiles are
    refilled from the historian's device telemetry where it has some (a restart)."""
    from controller.scheduling import CLASSES, FleetScheduler

    if not (spec.optimize_every_s > 0 and spec.objective in ("cost", "peak") and set(CLASSES) & set(kinds)
            and price_fn is not None):
        return None
    from controller.forecasting.head import HeadLoadForecast

    forecast = HeadLoadForecast(timezone=spec.timezone)
    if "meter" in kinds:
        forecast.seed(hist, clock.now(), kinds["meter"])
    sched = FleetScheduler(price_fn, objective=spec.objective, head_forecast=forecast,
                           ev_departure_h=spec.ev_departure_h, export_limit_kw=spec.export_limit_kw,
                           timezone=spec.timezone)
    sched.seed_profiles(hist, clock.now(), groups)
    return sched
