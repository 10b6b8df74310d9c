"""Emergency response: shed the fastest resources within seconds on under-frequency,
under-voltage or an operator command; report the margin (kW) and how long it holds.

Interface used by the controller runtime:
    det = EmergencyDetector(f_min_hz=49.8, v_min_pu=0.92, pickup_s=0.5)
    reason = det.check(t, f_hz=..., v_pu=...)      # "under_frequency" | "under_voltage" | None
    plan = plan_emergency(resources, t, tcl_groups=[TclGroup(...)], shed_kw=None, reason=reason)
    plan.commands          # in response-time order: batteries full discharge, EV caps to 0,
                           # flex loads curtail 100 %, TCLs forced off (after their lockout)
    plan.margin_kw, plan.shed_kw, plan.hold_s, plan.margin_at(elapsed_s), plan.restore
`resources` are controller.dr.allocation.Resource (unavailable ones are skipped). With
shed_kw set, whole resources are taken fastest first until the sum reaches it; without it
everything is shed.

Hold times, per resource (hand-checkable):
- battery: margin = p_kw + p_max_kw (from now to full discharge); holds
  (soc_kwh - soc_min_kwh) * eta_dis / p_max_kw hours.
- ev: margin = p_kw; holds until it must restart to still deliver e_need_kwh by departure:
  departure_t - t - 3600 * e_need_kwh / p_max_kw (default_hold_s when departure unknown).
- flex_load: margin = flex_kw (else p_kw); holds max_curtail_s (default_hold_s if unset).
- tcl unit (on now): margin = its p_kw; once off its temperature drifts to t_eq_c with time
  constant tau_s, so it holds tau * ln((t_eq - t0) / (t_eq - t_limit)) until the comfort
  limit; response waits out the remaining lockout.
`hold_s` is how long the shed (or, without shed_kw, the whole margin) stays fully available:
the largest s with margin_at(s) >= shed_kw.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.commands import Command
from controller.dr.allocation import Resource

RESPONSE_S = {"battery": 1.0, "ev": 5.0, "flex_load": 30.0, "tcl": 60.0}
KIND_ORDER = {"battery": 0, "ev": 1, "flex_load": 2, "tcl": 3}


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
    response_s: float = RESPONSE_S["tcl"]


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


def _resource_item(r: Resource, t: float, default_hold_s: float) -> Item | None:
    resp = RESPONSE_S[r.kind] if r.response_s is None else r.response_s
    src, why = "emergency", "emergency shed"
    if r.kind == "battery":
        p_max = r.p_max_kw
        margin = max(r.p_kw + p_max, 0.0)
        e = max(r.soc_kwh - r.soc_min_kwh, 0.0) * r.eta_dis if np.isfinite(r.soc_kwh) else 0.0
        hold = 3600.0 * e / p_max if p_max > 0 else 0.0
        if e <= 0:  # empty: can only stop charging, which holds as long as needed
            margin, hold = max(r.p_kw, 0.0), np.inf
        cmd = Command(r.device_id, "p_set_kw", -p_max if e > 0 else 0.0, src, why)
    elif r.kind == "ev":
        margin = max(r.p_kw, 0.0)
        if r.departure_t is None:
            hold = default_hold_s
        else:
            need_s = 3600.0 * (r.e_need_kwh or 0.0) / r.p_max_kw if r.p_max_kw > 0 else 0.0
            hold = max(r.departure_t - t - need_s, 0.0)
        cmd = Command(r.device_id, "p_max_set_kw", 0.0, src, why)
    elif r.kind == "flex_load":
        margin = max(r.flex_kw if np.isfinite(r.flex_kw) else r.p_kw, 0.0)
        hold = default_hold_s if r.max_curtail_s is None else r.max_curtail_s
        cmd = Command(r.device_id, "curtail_pct", 100.0, src, why)
    else:
        return None
    return Item(r.device_id, r.kind, resp, margin, hold, [cmd])


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
    cmds = [Command(f"{g.group}/{int(i)}", "force", -1.0, "emergency",
                    "emergency shed (after lockout)" if lock[i] > 0 else "emergency shed")
            for i in idx]
    return Item(f"{g.group}/*", "tcl", g.response_s + float(lock[idx].max()), float(m.sum()),
                float(h.min()), cmds, m, h)


def plan_emergency(resources: list[Resource], t: float, tcl_groups: list[TclGroup] = (),
                   shed_kw: float | None = None, reason: str = "operator",
                   default_hold_s: float = 3600.0, restore_cohorts: int = 4,
                   restore_spread_s: float = 600.0) -> EmergencyPlan:
    """The emergency shed: commands fastest first, margin, hold time and a restore plan."""
    items = [it for r in resources if r.available and r.kind in RESPONSE_S and r.kind != "tcl"
             for it in [_resource_item(r, t, default_hold_s)] if it is not None]
    items += [it for g in tcl_groups for it in [_tcl_item(g)] if it is not None]
    items = [it for it in items if it.margin_kw > 0]
    items.sort(key=lambda it: (it.response_s, KIND_ORDER[it.kind], -it.margin_kw))
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
                         restore_plan(items, resources, restore_cohorts, restore_spread_s), m, h)


def _hold_for(m: np.ndarray, h: np.ndarray, need_kw: float) -> float:
    """Largest s with sum(m[h > s]) >= need_kw (resources sorted by hold, longest first)."""
    if m.size == 0 or need_kw <= 0:
        return 0.0 if m.size == 0 else float(h.max())
    order = np.argsort(-h, kind="stable")
    cum = np.cumsum(m[order])
    k = int(np.searchsorted(cum, need_kw - 1e-9))
    return float(h[order][min(k, m.size - 1)])


def restore_plan(items: list[Item], resources: list[Resource], cohorts: int = 4,
                 spread_s: float = 600.0) -> list[RestoreStep]:
    """Staged return to normal so the rebound (cold-load pickup) does not re-trigger the
    emergency: flex loads first, TCLs released in cohorts over spread_s, EV caps lifted at
    the end, batteries back to their schedule last (they cover the rebound meanwhile)."""
    by_id = {r.device_id: r for r in resources}
    src, why = "emergency", "emergency restore"
    steps: list[RestoreStep] = []
    flex = [Command(it.device_id, "curtail_pct", 0.0, src, why) for it in items
            if it.kind == "flex_load"]
    if flex:
        steps.append(RestoreStep(0.0, flex, "flex loads released"))
    tcl_cmds = [c for it in items if it.kind == "tcl" for c in it.commands]
    if tcl_cmds:
        k = max(1, min(cohorts, len(tcl_cmds)))
        for j, chunk in enumerate(np.array_split(np.arange(len(tcl_cmds)), k)):
            steps.append(RestoreStep(spread_s * j / k,
                                     [Command(tcl_cmds[i].device_id, "force", 0.0, src, why)
                                      for i in chunk], f"TCL cohort {j + 1}/{k} back to auto"))
    ev = [Command(it.device_id, "p_max_set_kw", float(by_id[it.device_id].p_max_kw), src, why)
          for it in items if it.kind == "ev"]
    if ev:
        steps.append(RestoreStep(spread_s, ev, "EV charging caps lifted"))
    bat = [Command(it.device_id, "p_set_kw", float(by_id[it.device_id].base()) if
                   by_id[it.device_id].base_kw is not None else 0.0, src, why)
           for it in items if it.kind == "battery"]
    if bat:
        steps.append(RestoreStep(spread_s, bat, "batteries back to schedule"))
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
