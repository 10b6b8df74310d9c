"""Demand-response events and their lifecycle: `DrEvent` (one request for a load reduction
over a time window) and `DrManager` (create, cancel, opt in/out, status transitions, restore).

Interface used by the controller runtime:
    mgr = DrManager(on_change=historian_fn)   # on_change(event_dict, action) on every change
    ev = mgr.create(start_t, end_t, reduction_kw, groups=None, source="api", created_by="op1")
    mgr.cancel(ev.id, by="op1");  mgr.opt(ev.id, "out", by="ven")
    mgr.update(t)                  # pending -> active -> completed as the clock passes
    mgr.active(t)                  # opted-in events whose window holds t (what dispatch serves)
    mgr.requested_kw(t, group)     # summed reduction of the active events that use `group`
    mgr.restore(dicts)             # after a restart: reload what the historian holds (no on_change)

Times are epoch seconds UTC. The manager is thread-safe because the OpenADR VEN creates
events from its own thread while the cycle reads them. Bad input raises `DrError` with one
line that names the field and value.
"""

from __future__ import annotations

import math
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields

SOURCES = ("scenario", "api", "openadr")
STATUSES = ("pending", "active", "completed", "cancelled")
OPTS = ("in", "out")
ACTIONS = ("created", "cancelled", "opted", "status", "modified")


class DrError(ValueError):
    """One-line user error about a DR event (bad field value, unknown id, bad transition)."""


@dataclass
class DrEvent:
    id: str
    start_t: float
    end_t: float
    reduction_kw: float
    groups: list[str] | None = None  # fleet groups to use; None = every DR-capable group
    source: str = "api"
    status: str = "pending"
    opt: str = "in"
    created_by: str = ""
    created_t: float | None = None
    updated_by: str = ""
    modification: int = 0  # OpenADR modification number (or API edits)
    note: str = ""

    @property
    def duration_s(self) -> float:
        return self.end_t - self.start_t

    def covers(self, t: float) -> bool:
        return self.start_t <= t < self.end_t

    def uses(self, group: str | None) -> bool:
        return group is None or self.groups is None or group in self.groups

    def to_dict(self) -> dict:
        d = asdict(self)
        d["groups"] = None if self.groups is None else list(self.groups)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DrEvent:
        known = {f.name for f in fields(cls)}
        extra = sorted(set(d) - known)
        if extra:
            raise DrError(f"DR event {d.get('id', '?')}: unknown field '{extra[0]}'")
        ev = cls(**d)
        _validate(ev)
        return ev


def _validate(ev: DrEvent) -> None:
    def bad(name, value, expected):
        raise DrError(f"DR event {ev.id}: {name}={value!r}: {expected}")

    for name in ("start_t", "end_t", "reduction_kw"):
        v = getattr(ev, name)
        if not isinstance(v, (int, float)) or not math.isfinite(v):
            bad(name, v, "expected a finite number")
    if ev.end_t <= ev.start_t:
        bad("end_t", ev.end_t, f"must be after start_t={ev.start_t}")
    if ev.reduction_kw <= 0:
        bad("reduction_kw", ev.reduction_kw, "must be > 0")
    if ev.source not in SOURCES:
        bad("source", ev.source, f"expected one of {SOURCES}")
    if ev.status not in STATUSES:
        bad("status", ev.status, f"expected one of {STATUSES}")
    if ev.opt not in OPTS:
        bad("opt", ev.opt, f"expected one of {OPTS}")
    if ev.groups is not None and (not isinstance(ev.groups, (list, tuple)) or not ev.groups
                                  or not all(isinstance(g, str) and g for g in ev.groups)):
        bad("groups", ev.groups, "expected a non-empty list of group names or null")


@dataclass
class DrManager:
    """All DR events the controller knows, keyed by id, with status kept current by update(t)."""

    on_change: Callable[[dict, str], None] | None = None
    events: dict[str, DrEvent] = field(default_factory=dict)

    def __post_init__(self):
        self._lock = threading.RLock()

    # -- changes (each one reported through on_change) ------------------------------------
    def _emit(self, ev: DrEvent, action: str) -> None:
        if self.on_change is not None:
            self.on_change(ev.to_dict(), action)

    def create(self, start_t: float, end_t: float, reduction_kw: float,
               groups: list[str] | None = None, source: str = "api", created_by: str = "",
               id: str | None = None, opt: str = "in", t: float | None = None,
               note: str = "") -> DrEvent:
        ev = DrEvent(id=id or f"dr-{uuid.uuid4().hex[:10]}", start_t=float(start_t),
                     end_t=float(end_t), reduction_kw=float(reduction_kw),
                     groups=None if groups is None else list(groups), source=source, opt=opt,
                     created_by=created_by, created_t=t, note=note)
        _validate(ev)
        with self._lock:
            if ev.id in self.events:
                raise DrError(f"DR event {ev.id}: id already exists")
            if t is not None:
                ev.status = _status_at(ev, t)
            self.events[ev.id] = ev
        self._emit(ev, "created")
        return ev

    def create_from_scenario(self, spec, t: float | None = None) -> DrEvent:
        """From a `scenarios.model.DrEvent` (id, start datetime, duration_s, reduction_kw)."""
        start = spec.start.timestamp()
        return self.create(start, start + spec.duration_s, spec.reduction_kw, spec.groups,
                           source="scenario", created_by="scenario", id=spec.id, t=t)

    def modify(self, id: str, by: str = "", **changes) -> DrEvent:
        """Change window/size/groups of a pending or active event (e.g. OpenADR modification)."""
        allowed = {"start_t", "end_t", "reduction_kw", "groups", "modification", "note"}
        bad = sorted(set(changes) - allowed)
        if bad:
            raise DrError(f"DR event {id}: field '{bad[0]}' cannot be modified")
        with self._lock:
            ev = self.get(id)
            if ev.status in ("completed", "cancelled"):
                raise DrError(f"DR event {id}: cannot modify a {ev.status} event")
            trial = DrEvent(**{**ev.to_dict(), **changes})
            _validate(trial)
            for k, v in changes.items():
                setattr(ev, k, v)
            if "modification" not in changes:
                ev.modification += 1
            ev.updated_by = by
        self._emit(ev, "modified")
        return ev

    def cancel(self, id: str, by: str = "") -> DrEvent:
        with self._lock:
            ev = self.get(id)
            if ev.status == "completed":
                raise DrError(f"DR event {id}: already completed, cannot cancel")
            if ev.status == "cancelled":
                return ev
            ev.status, ev.updated_by = "cancelled", by
        self._emit(ev, "cancelled")
        return ev

    def opt(self, id: str, opt: str, by: str = "") -> DrEvent:
        if opt not in OPTS:
            raise DrError(f"DR event {id}: opt={opt!r}: expected 'in' or 'out'")
        with self._lock:
            ev = self.get(id)
            if ev.opt == opt:
                return ev
            ev.opt, ev.updated_by = opt, by
        self._emit(ev, "opted")
        return ev

    def update(self, t: float) -> list[DrEvent]:
        """Advance statuses to time t; returns the events whose status changed."""
        changed = []
        with self._lock:
            for ev in self.events.values():
                if ev.status == "cancelled":
                    continue
                new = _status_at(ev, t)
                if new != ev.status and STATUSES.index(new) > STATUSES.index(ev.status):
                    ev.status = new
                    changed.append(ev)
        for ev in changed:
            self._emit(ev, "status")
        return changed

    # -- queries --------------------------------------------------------------------------
    def get(self, id: str) -> DrEvent:
        with self._lock:
            ev = self.events.get(id)
        if ev is None:
            raise DrError(f"DR event {id}: no such event")
        return ev

    def list(self, status: str | None = None) -> list[DrEvent]:
        with self._lock:
            evs = sorted(self.events.values(), key=lambda e: (e.start_t, e.id))
        return [e for e in evs if status is None or e.status == status]

    def active(self, t: float) -> list[DrEvent]:
        """Opted-in, not cancelled events whose window holds t (independent of update())."""
        with self._lock:
            return [e for e in self.list() if e.opt == "in" and e.status != "cancelled"
                    and e.covers(t)]

    def requested_kw(self, t: float, group: str | None = None) -> float:
        return float(sum(e.reduction_kw for e in self.active(t) if e.uses(group)))

    # -- persistence ----------------------------------------------------------------------
    def to_dicts(self) -> list[dict]:
        return [e.to_dict() for e in self.list()]

    def restore(self, dicts: list[dict], t: float | None = None) -> int:
        """Reload events (e.g. the latest row per id from the historian); later rows for the
        same id win. Does not call on_change. Returns how many events are held."""
        with self._lock:
            for d in dicts:
                ev = DrEvent.from_dict(dict(d))
                self.events[ev.id] = ev
            n = len(self.events)
        if t is not None:
            self.update(t)
        return n


def _status_at(ev: DrEvent, t: float) -> str:
    if t >= ev.end_t:
        return "completed"
    if t >= ev.start_t:
        return "active"
    return "pending"
