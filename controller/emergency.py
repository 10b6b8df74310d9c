"""Emergency response: shed the fastest resources within seconds on under-frequency,
under-voltage or an operator command; report the margin (kW) and how long it holds, and
the staged restore. The plan's commands are what the cycle sends (controller/sources).

    plan = plan_emergency(groups, t, tcl_groups=[TclGroup(...)], shed_kw=None, reason=reason,
                          base_set={group: scheduled p_set_kw})
    plan.commands          # in response-time order: batteries full discharge, EV caps to 0,
                           # flex loads curtail 100 %, TCLs forced off (after their lockout)
    plan.margin_kw, plan.shed_kw, plan.hold_s, plan.margin_at(elapsed_s), plan.restore
`groups` are the cycle's GroupStates (or any device-kind view, controller.kinds); devices
that are not usable are skipped. Margin, hold time and the shed value of each device come
from its kind (`Kind.shed`), the restore value from `Kind.released`. With shed_kw set, whole
resources are taken fastest first until the sum reaches it; without it everything is shed.

TCL units (on now): margin = their p_kw; once off the temperature drifts to t_eq_c with time
constant tau_s, so a unit holds tau * ln((t_eq - t0) / (t_eq - t_limit)) until its comfort
limit; response waits out the remaining lockout.
`hold_s` is how long the shed (or, without shed_kw, the whole margin) stays fully available:
the largest s with margin_at(s) >= shed_kw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.commands import Command
from controller.kinds import DR_KINDS, KINDS


@dataclass
class TclGroup:
    """Arrays for one TCL group (one row per unit) as the controller sees them."""

    group: str
    p_kw: np.ndarray  # electric power now (0 when off)
    on: np.ndarray  # bool
    t_c: np.ndarray  # temperature now
    t_limit_c: np.ndarray  # comfort limit it may drift to while off
    t_eq_c: np.ndarray  # temperature it drifts toward while off (outdoor for a 1st-order ETP)
    tau_s: np.ndarray  # thermal time constant R*C
    mode: np.ndarray | float = 1.0  # +1 cooling (limit is an upper bound), -1 heating
    lock_remaining_s: np.ndarray | None = None  # time before it may switch off (min-on)
    available: np.ndarray | None = None
    response_s: float = KINDS["tcl"].response_s


def drift_time_s(t0_c, t_eq_c, t_limit_c, tau_s, mode=1.0) -> np.ndarray:
    """Time for a unit left off to drift from t0 toward t_eq until it reaches its comfort
    limit: tau * ln((t_eq - t0) / (t_eq - t_limit)). mode +1 (cooling: the limit is an upper
    bound) or -1 (heating: a lower bound). 0 if already past the limit, inf if the drift
    never gets there."""
    sg = np.sign(np.asarray(mode, float)) + (np.asarray(mode, float) == 0)
    t0, teq, tlim = (sg * np.asarray(x, float) for x in (t0_c, t_eq_c, t_limit_c))
    t0, teq, tlim, tau = np.broadcast_arrays(t0, teq, tlim, np.asarray(tau_s, float))
    out = np.full(t0.shape, np.inf)
    past = t0 >= tlim
    reach = ~past & (teq > tlim)
    out[reach] = tau[reach] * np.log((teq[reach] - t0[reach]) / (teq[reach] - tlim[reach]))
    out[past] = 0.0
    return out


@dataclass
class Item:
    """One resource (or one TCL group) in the plan."""

    device_id: str
    kind: str
    response_s: float
    margin_kw: float
    hold_s: float  # for a TCL group: the shortest unit hold
    commands: list[Command] = field(default_factory=list)
    unit_margin_kw: np.ndarray | None = None  # TCL: per unit
    unit_hold_s: np.ndarray | None = None


@dataclass
class RestoreStep:
    delay_s: float  # after the operator/automatic restore decision
    commands: list[Command]
    note: str = ""


@dataclass
class EmergencyPlan:
    t: float
    reason: str
    items: list[Item]  # taken, fastest first
    margin_kw: float  # everything usable could shed (taken or not)
    shed_kw: float  # what the commands shed
    requested_kw: float | None
    hold_s: float
    restore: list[RestoreStep]
    _m: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    _h: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)

    @property
    def commands(self) -> list[Command]:
        return [c for it in self.items for c in it.commands]

    @property
    def response_s(self) -> float:
        """Time until the whole shed is in place (slowest taken resource)."""
        return max((it.response_s for it in self.items), default=0.0)

    def margin_at(self, elapsed_s: float) -> float:
        """Shed still held `elapsed_s` after the start (resources drop out as they run out)."""
        return float(self._m[self._h > elapsed_s].sum())

    def summary(self) -> dict:
        by = {}
        for it in self.items:
            by[it.kind] = round(by.get(it.kind, 0.0) + it.margin_kw, 3)
        return {"t": self.t, "reason": self.reason, "margin_kw": round(self.margin_kw, 3),
                "shed_kw": round(self.shed_kw, 3), "requested_kw": self.requested_kw,
                "hold_s": None if not np.isfinite(self.hold_s) else round(self.hold_s, 1),
                "response_s": self.response_s, "by_kind_kw": by,
                "commands": len(self.commands)}


def _device_items(g, t: float, default_hold_s: float) -> list[Item]:
    """One item per usable device of a per-device kind: its shed as its kind defines it."""
    k = KINDS[g.kind]
    p = np.nan_to_num(g.get("p_kw"))
    margin, hold, value = k.shed(g, p, t, default_hold_s)
    return [Item(g.ids[j], g.kind, k.response_s, float(margin[j]), float(hold[j]),
                 [Command(g.ids[j], k.dr_setpoint, float(value[j]), "emergency", "emergency shed")])
            for j in np.flatnonzero(g.usable())]


def _tcl_item(g: TclGroup) -> Item | None:
    n = len(g.p_kw)
    ok = np.ones(n, bool) if g.available is None else np.asarray(g.available, bool)
    on = np.asarray(g.on, bool) & ok
    if not on.any():
        return None
    lock = np.zeros(n) if g.lock_remaining_s is None else np.maximum(g.lock_remaining_s, 0.0)
    hold = drift_time_s(g.t_c, g.t_eq_c, g.t_limit_c, g.tau_s, g.mode)
    idx = np.flatnonzero(on)
    m = np.asarray(g.p_kw, float)[idx]
    h = hold[idx]
    cmds = [Command(f"{g.group}/{int(i)}", KINDS["tcl"].dr_setpoint, -1.0, "emergency",
                    "emergency shed (after lockout)" if lock[i] > 0 else "emergency shed")
            for i in idx]
    return Item(f"{g.group}/*", "tcl", g.response_s + float(lock[idx].max()), float(m.sum()),
                float(h.min()), cmds, m, h)


def plan_emergency(groups, t: float, tcl_groups: list[TclGroup] = (),
                   shed_kw: float | None = None, reason: str = "operator",
                   default_hold_s: float = 3600.0, restore_cohorts: int = 4,
                   restore_spread_s: float = 600.0, base_set: dict | None = None) -> EmergencyPlan:
    """The emergency shed: commands fastest first, margin, hold time and a restore plan."""
    groups = [g for g in groups if g.kind in DR_KINDS]
    items = [it for g in groups for it in _device_items(g, t, default_hold_s)]
    items += [it for g in tcl_groups for it in [_tcl_item(g)] if it is not None]
    items = [it for it in items if it.margin_kw > 0]
    items.sort(key=lambda it: (it.response_s, KINDS[it.kind].shed_order, -it.margin_kw))
    margin = float(sum(it.margin_kw for it in items))
    if shed_kw is not None:
        taken, acc = [], 0.0
        for it in items:
            if acc >= shed_kw - 1e-9:
                break
            taken.append(it)
            acc += it.margin_kw
        items = taken
    m = np.concatenate([it.unit_margin_kw if it.unit_margin_kw is not None
                        else np.array([it.margin_kw]) for it in items]) if items else np.zeros(0)
    h = np.concatenate([it.unit_hold_s if it.unit_hold_s is not None
                        else np.array([it.hold_s]) for it in items]) if items else np.zeros(0)
    shed = float(m.sum())
    need = shed if shed_kw is None else min(shed_kw, shed)
    hold = _hold_for(m, h, need)
    return EmergencyPlan(t, reason, items, margin, shed, shed_kw, hold,
                         restore_plan(items, groups, base_set, restore_cohorts, restore_spread_s), m, h)


def _hold_for(m: np.ndarray, h: np.ndarray, need_kw: float) -> float:
    """Largest s with sum(m[h > s]) >= need_kw (resources sorted by hold, longest first)."""
    if m.size == 0 or need_kw <= 0:
        return 0.0 if m.size == 0 else float(h.max())
    order = np.argsort(-h, kind="stable")
    cum = np.cumsum(m[order])
    k = int(np.searchsorted(cum, need_kw - 1e-9))
    return float(h[order][min(k, m.size - 1)])


def restore_plan(items: list[Item], groups, base_set: dict | None = None, cohorts: int = 4,
                 spread_s: float = 600.0) -> list[RestoreStep]:
    """Staged return to normal so the rebound (cold-load pickup) does not re-trigger the
    emergency: kinds that restore early first (flex loads), TCLs released in cohorts over
    spread_s, the others (EV caps, then batteries, which cover the rebound meanwhile) at the
    end; each back to its kind's released value (batteries: their schedule)."""
    released = {}
    for g in groups:
        vals = KINDS[g.kind].released(g, (base_set or {}).get(g.group))
        released.update({d: float(np.nan_to_num(vals[j])) for j, d in enumerate(g.ids)})
    src, why = "emergency", "emergency restore"
    steps: list[RestoreStep] = []
    by_kind: dict[str, list[Item]] = {}
    for it in items:
        by_kind.setdefault(it.kind, []).append(it)
    for kname in sorted(by_kind, key=lambda k: KINDS[k].restore_rank):
        k, its = KINDS[kname], by_kind[kname]
        if k.group_dispatch:
            cmds = [c for it in its for c in it.commands]
            n = max(1, min(cohorts, len(cmds)))
            for j, chunk in enumerate(np.array_split(np.arange(len(cmds)), n)):
                steps.append(RestoreStep(spread_s * j / n,
                                         [Command(cmds[i].device_id, k.dr_setpoint, 0.0, src, why)
                                          for i in chunk], f"{kname} cohort {j + 1}/{n} released"))
            continue
        cmds = [Command(it.device_id, k.dr_setpoint, released[it.device_id], src, why) for it in its]
        steps.append(RestoreStep(spread_s if k.restore_late else 0.0, cmds, f"{kname} released"))
    steps.sort(key=lambda s: s.delay_s)
    return steps


class EmergencyDetector:
    """Under-frequency / under-voltage trigger with a pickup delay and a reset hysteresis.

    check() returns the reason once when a condition has persisted pickup_s, then nothing
    until every quantity has been back in range for reset_s (re-arming)."""

    def __init__(self, f_min_hz: float = 49.8, v_min_pu: float = 0.92, pickup_s: float = 0.5,
                 reset_s: float = 60.0):
        self.f_min_hz, self.v_min_pu = f_min_hz, v_min_pu
        self.pickup_s, self.reset_s = pickup_s, reset_s
        self._since: dict[str, float] = {}
        self._normal_since: float | None = None
        self.tripped: str | None = None

    def check(self, t: float, f_hz: float | None = None, v_pu: float | None = None) -> str | None:
        low = {"under_frequency": f_hz is not None and np.isfinite(f_hz) and f_hz < self.f_min_hz,
               "under_voltage": v_pu is not None and np.isfinite(v_pu) and v_pu < self.v_min_pu}
        for k, bad in low.items():
            if bad:
                self._since.setdefault(k, t)
            else:
                self._since.pop(k, None)
        if self.tripped is not None:
            if any(low.values()):
                self._normal_since = None
            else:
                self._normal_since = t if self._normal_since is None else self._normal_since
                if t - self._normal_since >= self.reset_s:
                    self.tripped, self._normal_since = None, None
            return None
        for k, t0 in self._since.items():
            if t - t0 >= self.pickup_s:
                self.tripped = k
                return k
        return None
