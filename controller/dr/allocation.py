"""Share a requested load reduction over the flexible resources the controller can use now.

Interface used by the controller runtime (and by controller/emergency.py):
    res = [Resource("home_batteries/3", "battery", p_kw=0.0, base_kw=0.0, p_max_kw=5,
                    soc_kwh=6, soc_min_kwh=1), ...]       # built from telemetry each cycle
    alloc = allocate(res, target_kw=120.0, hold_h=1.0)     # proportional to headroom
    alloc.commands      -> list[Command] (source "dr"), one per usable DR resource
    alloc.cut_kw, alloc.allocated_kw, alloc.shortfall_kw
    loop = DeliveryLoop()                                  # one per event, each cycle:
    target = loop.update(requested_kw, delivered_kw, headroom_kw, lost_kw=alloc.lost_kw(ids))
    release_commands(res)  -> commands that hand devices back after the event

Resources and what a cut means (load convention, + consumption):
- battery: `p_set_kw` = base_kw - cut, inside ±p_max_kw; the cut is limited by the SOC
  energy above soc_min that can hold the discharge for `hold_h` hours.
- ev: `p_max_set_kw` = base_kw - cut (>= 0): the charging cap.
- flex_load: `curtail_pct` = 100 * cut / flex_kw (flex_kw: its flexible share in kW).
- tcl: a group resource (device id "<group>/*"): `p_reduction_kw` = cut, handed to the TCL
  aggregation law, which decides which units switch. Headroom comes from the aggregator.
- pv: no load-reduction resource; ignored.
Unavailable resources (`available=False`) are skipped, so a device that drops out is made up
by the others at the next call. Allocation is proportional to headroom (every device gives
the same fraction, so losing one costs little) or in merit order by `cost`.
Arrays are used inside; Resource objects are only the hand-over format.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.commands import Command

SETPOINT = {"battery": "p_set_kw", "ev": "p_max_set_kw", "flex_load": "curtail_pct",
            "tcl": "p_reduction_kw"}
DR_KINDS = tuple(SETPOINT)
KINDS = DR_KINDS + ("pv",)


class AllocationError(ValueError):
    """Bad resource description (unknown kind, negative rating, missing rating)."""


@dataclass
class Resource:
    device_id: str
    kind: str  # battery | ev | flex_load | tcl | pv
    p_kw: float = 0.0  # metered power now (load +)
    base_kw: float | None = None  # what it would draw without DR (schedule); default p_kw
    headroom_kw: float | None = None  # reduction it can give; computed from ratings if None
    p_max_kw: float = float("nan")  # battery ±limit, EV charger rating
    flex_kw: float = float("nan")  # flex_load: flexible share (kW) at curtail 100 %
    soc_kwh: float = float("nan")
    soc_min_kwh: float = 0.0
    eta_dis: float = 0.95
    cost: float = 0.0  # per kWh of reduction, for merit order
    available: bool = True
    # emergency extras (controller/emergency.py)
    response_s: float | None = None  # time to reach a new setpoint; default per kind
    departure_t: float | None = None  # ev: epoch s
    e_need_kwh: float | None = None  # ev: energy still wanted by departure
    max_curtail_s: float | None = None  # flex_load: how long a curtailment may last

    def base(self) -> float:
        return self.p_kw if self.base_kw is None else self.base_kw


def headroom(r: Resource, hold_h: float = 1.0) -> float:
    """Reduction (kW, >= 0) the resource can deliver and hold for hold_h hours."""
    if not r.available or r.kind == "pv":
        return 0.0
    if r.kind not in KINDS:
        raise AllocationError(f"resource {r.device_id}: kind={r.kind!r}: expected one of {KINDS}")
    if r.headroom_kw is not None:
        return max(float(r.headroom_kw), 0.0)
    base = r.base()
    if r.kind == "battery":
        if not np.isfinite(r.p_max_kw) or r.p_max_kw < 0:
            raise AllocationError(f"resource {r.device_id}: p_max_kw={r.p_max_kw}: need a rating >= 0")
        if np.isfinite(r.soc_kwh):
            e = max(r.soc_kwh - r.soc_min_kwh, 0.0) * r.eta_dis
            floor = -min(r.p_max_kw, e / max(hold_h, 1e-6))
        else:
            floor = -r.p_max_kw
        return max(base - floor, 0.0)
    if r.kind == "ev":
        return max(base, 0.0)
    if r.kind == "flex_load":
        return max(r.flex_kw if np.isfinite(r.flex_kw) else base, 0.0)
    raise AllocationError(f"resource {r.device_id}: tcl group needs headroom_kw from the aggregator")


@dataclass
class Allocation:
    target_kw: float
    device_ids: list[str]
    kinds: list[str]
    headroom_kw: np.ndarray
    cut_kw: np.ndarray
    commands: list[Command] = field(default_factory=list)

    @property
    def allocated_kw(self) -> float:
        return float(self.cut_kw.sum())

    @property
    def shortfall_kw(self) -> float:
        return max(self.target_kw - self.allocated_kw, 0.0)

    @property
    def total_headroom_kw(self) -> float:
        return float(self.headroom_kw.sum())

    def lost_kw(self, usable_ids) -> float:
        """Cut that was given to devices no longer in `usable_ids` (dropped out, departed):
        pass it to DeliveryLoop.update so re-allocation, not the integral, covers it."""
        keep = set(usable_ids)
        return float(sum(c for d, c in zip(self.device_ids, self.cut_kw) if d not in keep))

    def summary(self) -> dict:
        by = {}
        for k, c in zip(self.kinds, self.cut_kw):
            by[k] = by.get(k, 0.0) + float(c)
        return {"target_kw": self.target_kw, "allocated_kw": round(self.allocated_kw, 3),
                "shortfall_kw": round(self.shortfall_kw, 3),
                "headroom_kw": round(self.total_headroom_kw, 3),
                "by_kind_kw": {k: round(v, 3) for k, v in by.items()}}


def split(target_kw: float, head: np.ndarray, cost: np.ndarray | None = None,
          method: str = "proportional") -> np.ndarray:
    """Cut per resource: sums to min(target, sum(head)), never above head."""
    head = np.maximum(np.asarray(head, float), 0.0)
    total = head.sum()
    need = min(max(float(target_kw), 0.0), total)
    if need <= 0.0:
        return np.zeros_like(head)
    if method == "proportional":
        return head * (need / total)
    if method == "merit":
        order = np.argsort(np.zeros_like(head) if cost is None else cost, kind="stable")
        cum = np.cumsum(head[order])
        take = np.clip(need - (cum - head[order]), 0.0, head[order])
        out = np.zeros_like(head)
        out[order] = take
        return out
    raise AllocationError(f"allocation: method={method!r}: expected 'proportional' or 'merit'")


def setpoint_value(r: Resource, cut_kw: float) -> float:
    """The setpoint (SETPOINT[kind]) that lowers the resource's power by cut_kw."""
    base = r.base()
    if r.kind == "battery":
        return float(np.clip(base - cut_kw, -r.p_max_kw, r.p_max_kw))
    if r.kind == "ev":
        hi = r.p_max_kw if np.isfinite(r.p_max_kw) else max(base, 0.0)
        return float(np.clip(base - cut_kw, 0.0, hi))
    if r.kind == "flex_load":
        flex = r.flex_kw if np.isfinite(r.flex_kw) else base
        return float(np.clip(100.0 * cut_kw / flex, 0.0, 100.0)) if flex > 1e-9 else 0.0
    if r.kind == "tcl":
        return float(max(cut_kw, 0.0))
    raise AllocationError(f"resource {r.device_id}: kind {r.kind!r} offers no load reduction")


def allocate(resources: list[Resource], target_kw: float, hold_h: float = 1.0,
             method: str = "proportional", source: str = "dr", reason: str = "") -> Allocation:
    """Commands that cut `target_kw` (or as much as the usable headroom allows)."""
    use = [r for r in resources if r.available and r.kind in DR_KINDS]
    head = np.array([headroom(r, hold_h) for r in use], float)
    cost = np.array([r.cost for r in use], float)
    cut = split(target_kw, head, cost, method)
    cmds = [Command(r.device_id, SETPOINT[r.kind], setpoint_value(r, c), source,
                    reason or f"dr cut {c:.2f} kW") for r, c in zip(use, cut)]
    return Allocation(float(target_kw), [r.device_id for r in use], [r.kind for r in use],
                      head, cut, cmds)


def release_commands(resources: list[Resource], source: str = "dr",
                     reason: str = "dr event ended") -> list[Command]:
    """Hand every DR resource back to normal operation (battery to its base schedule, EV cap
    to its rating, flex curtailment to 0, TCL group reduction to 0)."""
    out = []
    for r in resources:
        if r.kind not in DR_KINDS:
            continue
        if r.kind == "battery":
            v = float(np.clip(r.base(), -r.p_max_kw, r.p_max_kw))
        elif r.kind == "ev":
            v = float(r.p_max_kw) if np.isfinite(r.p_max_kw) else max(r.base(), 0.0)
        else:
            v = 0.0
        out.append(Command(r.device_id, SETPOINT[r.kind], v, source, reason))
    return out


@dataclass
class DeliveryLoop:
    """Integral correction of the allocation target so metered delivery meets the request.

    Devices under-deliver (losses, clipping, slow response, baselines that drift): each cycle
    `update(requested, delivered)` adds ki * error to a correction, bounded to
    ±max_correction_pct of the request and to the usable headroom (anti-windup), and returns
    the target to allocate next. Converges when 0 < ki * (d delivered / d target) < 2.
    """

    ki: float = 0.6
    max_correction_pct: float = 50.0
    correction_kw: float = 0.0
    requested_kw: float = 0.0

    def target(self, requested_kw: float) -> float:
        return max(requested_kw + self.correction_kw, 0.0)

    def update(self, requested_kw: float, delivered_kw: float,
               headroom_kw: float | None = None, lost_kw: float = 0.0) -> float:
        """Next allocation target. `lost_kw`: the share of the last allocation held by devices
        that have since dropped out (Allocation.lost_kw); the fresh allocation over the
        remaining devices replaces it, so it is not integrated as a plant error."""
        if requested_kw != self.requested_kw:  # new or resized event: scale the correction
            self.correction_kw *= (requested_kw / self.requested_kw) if self.requested_kw > 0 else 0.0
            self.requested_kw = requested_kw
        if np.isfinite(delivered_kw):  # no usable measurement: hold the correction
            self.correction_kw += self.ki * (requested_kw - delivered_kw - max(lost_kw, 0.0))
        lim = self.max_correction_pct / 100.0 * requested_kw
        self.correction_kw = float(np.clip(self.correction_kw, -lim, lim))
        if headroom_kw is not None:
            self.correction_kw = min(self.correction_kw, max(headroom_kw - requested_kw, 0.0))
        return self.target(requested_kw)

    def reset(self) -> None:
        self.correction_kw, self.requested_kw = 0.0, 0.0
