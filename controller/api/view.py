"""A snapshot of the controller for the API, taken without ever waiting on the cycle.

The cycle holds `controller.lock` while it reads, decides and writes. API reads must not queue
behind it (a slow device or a burst of viewers would stall both), so they read a copy of the
controller's state taken once per cycle (or after an operator action): the copy is refreshed
only when the lock is free at that instant (`acquire(blocking=False)`), else the previous copy
is served. Copies are plain arrays and dicts; building JSON from them happens outside the lock.
"""

from __future__ import annotations

import copy
import logging
import threading
import time

import numpy as np

log = logging.getLogger("controller.api")


class Snapshot:
    """What the read endpoints need, copied under the cycle's lock."""

    def __init__(self, ctl):
        st = ctl.state
        self.taken_mono = time.monotonic()
        self.n_cycle = getattr(ctl, "n_cycle", 0)
        self.t = st.t
        self.summary = st.summary()
        tcl = getattr(ctl, "tcl", None)
        for name, extra in (tcl.summary() if tcl else {}).items():
            if name in self.summary:
                self.summary[name].update(extra)
        self.groups = [(g.group, g.kind, list(g.ids), g.usable().copy(),
                        None if g.available is None else g.available.copy(),
                        None if g.in_service is None else g.in_service.copy(),
                        {k: v.copy() for k, v in g.values.items()},
                        {k: q.copy() for k, q in g.quality.items()},
                        {k: np.asarray(r, float).copy() for k, r in g.ratings.items()})
                       for g in st.groups.values()]
        self.der = _der_by_bus(st.groups.values())
        try:
            self.margin = ctl.margin()
        except Exception as e:  # noqa: BLE001 - a snapshot must not fail on a reporting detail
            self.margin = {"margin_kw": None, "error": str(e)[:200]}
        self.emergency = copy.deepcopy(getattr(ctl, "emergency", None))
        self.last_report = dict(getattr(ctl, "last_report", {}) or {})
        self.schedule = getattr(ctl, "schedule", None)  # replaced whole, never mutated in place
        self.dr = [{**e.as_row(), **e.performance()} for e in getattr(ctl, "dr", {}).values()]
        self.dr_samples = {e.id: list(e.samples or []) for e in getattr(ctl, "dr", {}).values()
                           if e.status == "active"}
        self.gate_totals = dict(getattr(ctl, "gate_totals", {}) or {})
        lg = getattr(ctl, "last_gate", None)
        self.gate_decisions = [] if lg is None else [d.as_dict() for d in lg.decisions
                                                     if d.verdict != "accepted"]
        rep = getattr(getattr(ctl, "gate", None), "last_report", None) or {}
        self.gate_report = dict(rep)
        self.cycle_ms = list(getattr(ctl, "cycle_ms", [])[-500:])

    def fleet_capacity_kw(self) -> float:
        """Rated flexible power of the fleet (p_max_kw / s_rated_kva, else |p_kw| now)."""
        total = 0.0
        for _, kind, _, _, _, _, values, _, ratings in self.groups:
            if kind in ("meter", "rtu", "pv"):
                continue
            r = ratings.get("p_max_kw", ratings.get("s_rated_kva"))
            p = np.abs(np.nan_to_num(values.get("p_kw", np.zeros(0))))
            if r is not None and len(r):
                total += float(np.where(np.isfinite(r), r, p if len(p) == len(r) else 0.0).sum())
            else:
                total += float(p.sum())
        return total


class StateView:
    """Serves the latest Snapshot; `refresh` tries to take a newer one without blocking."""

    def __init__(self, ctl, wait_first_s: float = 5.0):
        self.ctl = ctl
        self._snap: Snapshot | None = None
        self._version = 0  # bumped by API actions: the next read wants a fresh copy
        self._snap_version = -1
        self._build_lock = threading.Lock()
        self.urgent = 0  # emergency requests in progress: everything else steps aside
        if ctl.lock.acquire(timeout=wait_first_s):
            try:
                self._take()
            finally:
                ctl.lock.release()

    def _take(self) -> None:
        v = self._version
        sig = self._signature()
        self._snap = Snapshot(self.ctl)
        self._snap_version, self._snap_sig = v, sig

    def invalidate(self) -> None:
        self._version += 1

    def _signature(self):
        """What changes outside the cycle and the API (the OpenADR VEN adds, opts and cancels
        events; set_emergency from elsewhere): read without the lock, so best effort."""
        try:
            return (getattr(self.ctl, "n_cycle", 0), id(getattr(self.ctl, "emergency", None)),
                    tuple((e.id, e.status, e.opt) for e in list(getattr(self.ctl, "dr", {}).values())))
        except RuntimeError:  # the dict changed while we looked: call it changed
            return None

    def stale(self) -> bool:
        s = self._snap
        return (s is None or self._snap_version != self._version
                or self._signature() != getattr(self, "_snap_sig", None))

    def refresh(self) -> bool:
        """Take a new snapshot if one is due and the cycle's lock is free right now."""
        if not self.stale():
            return False
        if not self._build_lock.acquire(blocking=False):
            return False  # another thread is taking it
        try:
            if not self.ctl.lock.acquire(blocking=False):
                return False
            try:
                self._take()
            finally:
                self.ctl.lock.release()
            return True
        finally:
            self._build_lock.release()

    def cycle_running(self) -> bool:
        """The cycle (or an emergency action) holds the controller's lock right now, or an
        emergency request is being served (`urgent`)."""
        if self.urgent > 0:
            return True
        if self.ctl.lock.acquire(blocking=False):
            self.ctl.lock.release()
            return False
        return True

    def yield_to_cycle(self, max_s: float = 2.0) -> None:
        """Heavy API work calls this between chunks: while a cycle runs, step aside (a Python
        thread holding the GIL would otherwise slow every I/O step of the cycle)."""
        end = time.monotonic() + max_s
        while self.cycle_running() and time.monotonic() < end:
            time.sleep(0.0005)

    def get(self) -> Snapshot:
        self.refresh()
        if self._snap is None:  # the cycle held the lock through startup: wait once, bounded
            if self.ctl.lock.acquire(timeout=10.0):
                try:
                    self._take()
                finally:
                    self.ctl.lock.release()
            else:
                raise RuntimeError("controller state not available yet")
        return self._snap


def _der_by_bus(groups) -> list[dict]:
    """Managed devices per (bus, kind) with their summed good-quality P: the one-line's DER markers."""
    out: dict[tuple[int, str], dict] = {}
    for g in groups:
        if g.kind in ("meter", "rtu") or g.bus is None:
            continue
        p = g.get("p_kw")
        for b, x in zip(np.asarray(g.bus, np.int64), p):
            if b < 0:
                continue
            row = out.setdefault((int(b), g.kind), {"bus": int(b), "kind": g.kind, "n": 0, "p_kw": 0.0})
            row["n"] += 1
            row["p_kw"] += float(x) if np.isfinite(x) else 0.0
    return [{**r, "p_kw": round(r["p_kw"], 3)} for r in out.values()]

