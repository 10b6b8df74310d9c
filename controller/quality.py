"""Telemetry the controller does not believe blindly: data-quality checks on every fresh reading.

Checks, configurable per device kind (`KindChecks`, defaults in `DEFAULTS`):
- plausibility: |P| beyond `rating_factor` x the device's rating (s_rated_kva, p_max_kw),
  PF outside [-1, 1], state of charge outside [0, 100] % / [0, capacity];
- counters: an energy counter going backwards; a counter standing still for `stuck_polls`
  fresh polls while |P| says it should have advanced by more than `stuck_min_kwh` (a frozen
  device: the emulator's `freeze` fault, a hung gateway serving its cache);
- rate of change: |dP/dt| beyond `max_rate_frac_per_s` x rating;
- timestamp sanity: a reading time in the future, or going back.
A value failing a check gets quality `suspect` (state.Q_SUSPECT): GroupState.get() hands only
good values to dispatch, and the historian's good_values() (baselines, forecasts) skips it.
Each suspect device raises one alarm (`data_suspect`, naming the device and the check) that
clears when its readings pass again. Frozen and mis-scaled data are flagged within 3 polls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace

import numpy as np

from controller.state import Q_GOOD, Q_SUSPECT

log = logging.getLogger("controller.quality")


@dataclass
class KindChecks:
    rating_factor: float | None = 1.2  # |P| above this x rating is not physical
    rating_names: tuple[str, ...] = ("s_rated_kva", "p_max_kw")
    counters: tuple[tuple[str, int], ...] = ()  # energy counters (kWh) that only go up, and the
    # sign of P (load convention) that makes each one advance: import +1, export -1
    stuck_polls: int = 3  # fresh polls a counter may stand still while |P| says it moves
    stuck_min_kwh: float = 0.005  # ... by at least this much (counter resolution is 1 Wh)
    stuck_min_s: float = 1.5  # ... for at least this long (devices refresh registers about 1/s)
    max_rate_frac_per_s: float | None = None  # |dP/dt| limit as a share of the rating per s
    future_s: float = 5.0  # reading stamped later than now + this is not believed


DEFAULTS: dict[str, KindChecks] = {
    "pv": KindChecks(counters=(("e_exp_kwh", -1),), max_rate_frac_per_s=2.5),
    "battery": KindChecks(counters=(("e_imp_kwh", 1), ("e_exp_kwh", -1)), max_rate_frac_per_s=2.5),
    "meter": KindChecks(rating_factor=None, counters=(("e_imp_kwh", 1), ("e_exp_kwh", -1))),
    "ev": KindChecks(rating_names=("p_max_kw",)),
    "flex_load": KindChecks(rating_factor=None),
    "tcl": KindChecks(rating_factor=None),
    "rtu": KindChecks(rating_factor=None),
}


def checks_from(overrides: dict[str, dict] | None) -> dict[str, KindChecks]:
    """DEFAULTS with per-kind overrides ({kind: {field: value}}, e.g. the service config's
    `quality:` section); unknown kinds or fields raise ValueError naming them."""
    out = dict(DEFAULTS)
    known = {f.name for f in fields(KindChecks)}
    for kind, kw in (overrides or {}).items():
        bad = sorted(set(kw) - known)
        if bad:
            raise ValueError(f"quality.{kind}: unknown check setting(s) {bad}; known: {sorted(known)}")
        out[kind] = replace(out.get(kind, KindChecks(rating_factor=None)), **kw)
    return out


@dataclass
class _Memory:
    """Per group: the previous fresh reading and how long each counter has stood still."""

    t: np.ndarray
    p: np.ndarray
    counters: dict[str, np.ndarray] = field(default_factory=dict)
    still: dict[str, np.ndarray] = field(default_factory=dict)  # polls unchanged
    still_kwh: dict[str, np.ndarray] = field(default_factory=dict)  # energy |P| says passed since
    still_s: dict[str, np.ndarray] = field(default_factory=dict)  # seconds unchanged
    suspect: dict[str, str] = field(default_factory=dict)  # device -> check that flagged it


class DataQuality:
    """Run the checks over a FleetState after each read; raise/clear alarms in the historian."""

    def __init__(self, checks: dict[str, KindChecks] | None = None):
        self.checks = {**DEFAULTS, **(checks or {})}
        self._mem: dict[str, _Memory] = {}
        self.flagged_total = 0

    def apply(self, t: float, state, hist=None) -> dict[str, str]:
        """Mark suspect values in place; returns {device_id: check} suspect after this read."""
        out = {}
        for g in state.groups.values():
            out.update(self._group(t, g, hist))
        return out

    def _group(self, t: float, g, hist) -> dict[str, str]:
        ck = self.checks.get(g.kind, KindChecks(rating_factor=None))
        n = g.n
        if n == 0 or not g.values:
            return {}
        mem = self._mem.get(g.group)
        if mem is None or len(mem.t) != n:
            mem = self._mem[g.group] = _Memory(np.full(n, np.nan), np.full(n, np.nan))
        tr = np.asarray(g.t if g.t is not None else np.full(n, np.nan), float)
        fresh = np.isfinite(tr) & ~(tr <= mem.t)  # a new reading (not the link's cached one)
        # the first check that flags a device names it: its code (position in `names`, 0 none)
        code = np.zeros(n, np.int16)
        names = [""]
        detail: dict[int, str] = {}

        def flag(mask, check, text):
            new = mask & (code == 0)
            if not new.any():
                return
            names.append(check)
            code[new] = len(names) - 1
            for j in np.flatnonzero(new):
                detail[j] = text(j)

        p = g.values.get("p_kw")
        pq = g.quality.get("p_kw")
        p_ok = None if p is None else (pq == Q_GOOD) & np.isfinite(p)
        rating = None
        for name in ck.rating_names:
            r = g.ratings.get(name)
            if r is not None:
                rating = np.where(np.isfinite(rating), rating, r) if rating is not None else np.asarray(r, float)
        # timestamps
        flag(np.isfinite(tr) & (tr > t + ck.future_s), "timestamp",
             lambda j: f"reading stamped {tr[j] - t:.0f} s in the future")
        flag(np.isfinite(tr) & np.isfinite(mem.t) & (tr < mem.t), "timestamp",
             lambda j: "reading time went backwards")
        # plausibility against ratings and physics
        if p is not None and rating is not None and ck.rating_factor is not None:
            over = p_ok & np.isfinite(rating) & (rating > 0) & (np.abs(p) > ck.rating_factor * rating)
            flag(over, "beyond_rating",
                 lambda j: f"|P| {abs(p[j]):.3f} kW > {ck.rating_factor:g} x rating {rating[j]:g}")
        pf = g.values.get("pf")
        if pf is not None:
            flag(np.isfinite(pf) & (np.abs(pf) > 1.0 + 1e-6), "pf_range", lambda j: f"PF {pf[j]:g}")
        soc = g.values.get("soc_pct")
        if soc is not None:
            flag(np.isfinite(soc) & ((soc < -0.5) | (soc > 100.5)), "soc_range",
                 lambda j: f"SoC {soc[j]:g} %")
        # rate of change
        if p is not None and rating is not None and ck.max_rate_frac_per_s is not None:
            dt = tr - mem.t
            fast = (fresh & p_ok & np.isfinite(mem.p) & np.isfinite(rating) & (dt > 0)
                    & (np.abs(p - mem.p) > ck.max_rate_frac_per_s * rating * np.maximum(dt, 1.0)))
            flag(fast, "rate_of_change", lambda j: f"P jumped {mem.p[j]:.2f} -> {p[j]:.2f} kW")
        # counters: backwards, or standing still while the power says they must move
        for c, sign in ck.counters:
            v = g.values.get(c)
            if v is None:
                continue
            prev = mem.counters.get(c, np.full(n, np.nan))
            still = mem.still.setdefault(c, np.zeros(n, np.int64))
            owed = mem.still_kwh.setdefault(c, np.zeros(n))
            dur = mem.still_s.setdefault(c, np.zeros(n))
            ok = fresh & np.isfinite(v) & np.isfinite(prev)
            flag(ok & (v < prev - 1e-9), "counter_backwards",
                 lambda j, c=c, prev=prev, v=v: f"{c} {prev[j]:.3f} -> {v[j]:.3f}")
            same = ok & (v == prev)
            if p is not None:
                dt_h = np.where(np.isfinite(tr - mem.t), tr - mem.t, 0.0) / 3600.0
                flow = np.maximum(sign * np.nan_to_num(p), 0.0)  # power in this counter's direction
                owed[:] = np.where(same, owed + flow * dt_h, np.where(ok, 0.0, owed))
                dur[:] = np.where(same, dur + dt_h * 3600.0, np.where(ok, 0.0, dur))
            still[:] = np.where(same, still + 1, np.where(ok, 0, still))
            # a counter reading exactly 0 is SunSpec's "not implemented" for acc32: no evidence
            flag((still >= ck.stuck_polls - 1) & (owed > ck.stuck_min_kwh) & (dur >= ck.stuck_min_s)
                 & (v != 0), "stuck",
                 lambda j, c=c, still=still, owed=owed: f"{c} unchanged for {still[j] + 1} polls while "
                 f"|P| = {abs(np.nan_to_num(p[j])):.1f} kW (owes {owed[j]:.3f} kWh)")
            mem.counters[c] = np.where(fresh & np.isfinite(v), v, prev)
        # a frozen or mis-scaled device: none of its values is believed
        bad = code != 0
        why = [names[c] for c in code.tolist()] if bad.any() else None
        if why is not None:
            for q in g.quality.values():
                q[bad & (q == Q_GOOD)] = Q_SUSPECT
        if p is not None:
            mem.p = np.where(fresh & p_ok & ~bad, p, mem.p)
        mem.t = np.where(fresh, tr, mem.t)
        now = {}
        for j in np.flatnonzero(bad):
            dev = g.ids[j]
            now[dev] = why[j]
            if mem.suspect.get(dev) != why[j]:
                self.flagged_total += 1
                log.warning("%s: suspect data (%s): %s", dev, why[j], detail[j])
                if hist is not None:
                    if dev in mem.suspect:
                        hist.clear_alarm("data_suspect", dev)
                    hist.raise_alarm(t, "data_suspect", dev, f"{dev}: {why[j]}: {detail[j]}")
        for dev in [d for d in mem.suspect if d not in now]:
            j = g.ids.index(dev)
            if fresh[j] or not g.available[j]:  # cleared by a fresh good reading (or it went away)
                log.info("%s: data plausible again", dev)
                if hist is not None:
                    hist.clear_alarm("data_suspect", dev)
            else:
                now[dev] = mem.suspect[dev]
                for q in g.quality.values():
                    if q[j] == Q_GOOD:
                        q[j] = Q_SUSPECT
        mem.suspect = now
        return now
