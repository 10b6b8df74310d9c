"""Reconcile with the field at start (issue 17, crash safety).

A controller killed while devices held its setpoints (an emergency shed, a DR curtailment,
TCL units forced off) leaves them there. At every start the controller reads back what the
devices hold (`DeviceLink.read_setpoints`) and compares it with what it believes they hold:
the last confirmed write in its historian, or, for a setpoint it never wrote, the kind's
neutral value (battery 0 kW / its schedule, EV cap at its rating, flex load 0 % curtailed,
TCL auto, PV 100 %). Every difference raises one alarm `field_mismatch` naming the device,
setpoint and values, and then, as the config says (`reconcile:`):

- `adopt` (default): the held setpoints become an active emergency (`adopted: true`) that
  the cycle keeps sending and the operator ends with the ordinary restore (staged, back to
  neutral); it is logged like any emergency, so a further restart resumes it;
- `release`: each held setpoint is sent back to its neutral value through the cycle (the
  safety gate checks it; a ramp-limited release is carried to its target);
- `off`: nothing is read back.

While an emergency (other than an adopted one) or a restore is under way, differences are
only alarmed: that emergency re-sends its plan. A device that does not answer at start is
read back on its first answer (Acquisition.on_discovered) and handled the same way; in
`adopt` it joins the adopted emergency (or starts one).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from controller.commands import Command
from controller.emergency import EmergencyPlan, Item, restore_plan
from controller.kinds import DR_KINDS, KINDS

log = logging.getLogger("controller.reconcile")

MODES = ("adopt", "release", "off")
# setpoints compared per kind (reactive power is left to volt/VAR, which re-sends it as needed)
RECONCILED = {"battery": ("p_set_kw",), "ev": ("p_max_set_kw",), "flex_load": ("curtail_pct",),
              "tcl": ("force",), "pv": ("p_limit_pct",)}
TOL = {"p_set_kw": 0.05, "p_max_set_kw": 0.05, "curtail_pct": 0.5, "force": 0.5, "p_limit_pct": 0.5}
SOURCE, REASON = "emergency", "adopted from the field at start"


@dataclass
class Finding:
    device_id: str
    group: str
    kind: str
    setpoint: str
    held: float  # what the device holds
    believed: float  # what the controller believes it holds
    written: bool  # belief from the historian's last write (else the neutral value)
    neutral: float


def neutral(kind: str, setpoint: str, g, j: int, base_set: dict) -> float:
    """The value that hands the device back to its owner (NaN when unknown: EV without rating)."""
    if setpoint == "p_limit_pct":
        return 100.0
    if setpoint == "force":
        return 0.0
    k = KINDS[kind]
    vals = k.released(g, base_set.get(g.group))
    v = float(vals[j]) if np.ndim(vals) else float(vals)
    return v


def findings(ctl, held: dict[str, dict[str, float]]) -> list[Finding]:
    """Held setpoints that differ from what the controller believes."""
    last = ctl.hist.last_setpoints()
    base_set = ctl.schedule_src.base_set or {}
    out = []
    for g in ctl.state.groups.values():
        for sp in RECONCILED.get(g.kind, ()):
            for j, dev in enumerate(g.ids):
                v = held.get(dev, {}).get(sp)
                if v is None or not math.isfinite(v):
                    continue
                nv = neutral(g.kind, sp, g, j, base_set)
                written = (dev, sp) in last
                believed = last[(dev, sp)] if written else nv
                if not math.isfinite(believed) or abs(v - believed) <= TOL.get(sp, 1e-3):
                    continue
                out.append(Finding(dev, g.group, g.kind, sp, float(v), float(believed), written, nv))
    return out


def _read_back(ctl, device_ids=None) -> dict[str, dict[str, float]]:
    held: dict[str, dict[str, float]] = {}
    for link in {id(lk): lk for lk in ctl.links.values()}.values():
        fn = getattr(link, "read_setpoints", None)
        if fn is None:
            continue
        try:
            held.update(fn() if device_ids is None else fn(device_ids))
        except Exception as e:  # noqa: BLE001 - a link that cannot read back is reported, start goes on
            log.warning("setpoint read-back failed: %s", e)
            ctl.hist.raise_alarm(ctl.clock.now(), "reconcile_failed", None, f"read-back failed: {e}"[:300])
    return held


def reconcile(ctl, mode: str = "adopt") -> dict:
    """Read back, compare, alarm and adopt or release (see the module docstring); returns a
    summary {mode, read_back, findings: [...], action}."""
    if mode not in MODES:
        raise ValueError(f"reconcile: {mode!r} is not one of {MODES}")
    if mode == "off":
        return {"mode": mode, "action": "none"}
    with ctl.lock:
        held = _read_back(ctl)
        out = _settle(ctl, mode, held, ctl.clock.now())
        todo = {d for g in ctl.state.groups.values() if g.kind in RECONCILED for d in g.ids} - set(held)
        if todo:  # down at start: read back on their first answer
            log.info("reconcile: %d device(s) not read back at start, will be on their first answer", len(todo))

            def late(t: float, devs: list[str]) -> None:
                mine = todo.intersection(devs)
                if not mine:
                    return
                got = _read_back(ctl, sorted(mine))
                todo.difference_update(got)
                if got:
                    _settle(ctl, mode, got, t)

            ctl.acquisition.on_discovered.append(late)
    return out


def _settle(ctl, mode: str, held: dict, now: float) -> dict:
    """Compare what `held` says with the controller's belief; alarm, adopt or release."""
    found = findings(ctl, held)
    src = ctl.emergency_src
    busy = (src.emergency is not None and not src.emergency.get("adopted")) or src.restoring is not None
    action = "none" if not found else "alarm only (emergency under way)" if busy else mode
    for f in found:
        why = "last written" if f.written else "neutral"
        ctl.hist.raise_alarm(now, "field_mismatch", f.device_id,
                             f"{f.setpoint} held {f.held:g}, controller believes {f.believed:g} ({why}); "
                             f"{'adopted as an emergency' if action == 'adopt' else action}")
    if found and not busy:
        (_adopt if mode == "adopt" else _release)(ctl, found, now)
    rows = [(f.device_id, f.setpoint, f.held, f.believed) for f in found]
    ctl.hist.log_event(now, "reconcile", mode=mode, read_back=len(held), findings=rows, action=action)
    if found:
        log.warning("reconcile: %d setpoint(s) held in the field differ from the controller's: %s; %s",
                    len(found), ", ".join(f"{f.device_id}.{f.setpoint}={f.held:g}" for f in found[:5]),
                    action)
    return {"mode": mode, "read_back": len(held), "action": action,
            "findings": [f.__dict__ for f in found]}


def _margin_kw(f: Finding, g, j: int) -> float:
    """Load reduction the held setpoint gives against neutral (0 where it gives none or unknown)."""
    if f.setpoint == "p_set_kw":
        return max(f.neutral - f.held, 0.0)
    if f.setpoint == "p_max_set_kw":
        return max(f.neutral - f.held, 0.0) if math.isfinite(f.neutral) else 0.0
    if f.setpoint == "curtail_pct":
        base = g.get("p_base_kw")[j] if "p_base_kw" in g.values else math.nan
        return max(f.held, 0.0) / 100.0 * base if math.isfinite(base) else 0.0
    return 0.0


def _adopt(ctl, found: list[Finding], now: float) -> None:
    """The held setpoints as the active emergency: its plan sends them, its restore releases
    them. Devices found later join an adopted emergency already active."""
    src = ctl.emergency_src
    items, pv_cmds, tcl_groups = [], [], set()
    if src.emergency is not None and src.emergency.get("adopted") and src.plan is not None:
        new = {(f.device_id, f.setpoint) for f in found}
        tcl_groups = set(src.emergency.get("tcl_groups") or ())
        for c in src.plan.commands:
            k = src._kind(c.device_id)
            if KINDS[k].group_dispatch or (c.device_id, c.setpoint) in new:
                continue
            g, j = ctl._index[c.device_id]
            base = neutral(k, c.setpoint, ctl.state.groups[g], j, ctl.schedule_src.base_set or {})
            found = [*found, Finding(c.device_id, g, k, c.setpoint, c.value, base, False, base)]
    for f in found:
        g = ctl.state.groups[f.group]
        j = g.ids.index(f.device_id)
        if KINDS[f.kind].group_dispatch:  # TCL: the group's model holds the unit (comfort first)
            m = ctl.tcl.models.get(f.group)
            if m is not None and f.held < 0:
                m.held[j] = True
            tcl_groups.add(f.group)
            continue
        cmd = Command(f.device_id, f.setpoint, f.held, SOURCE, REASON)
        if f.kind == "pv":
            pv_cmds.append((cmd, Command(f.device_id, f.setpoint, f.neutral, SOURCE, "emergency restore")))
            items.append(Item(f.device_id, f.kind, KINDS[f.kind].response_s, 0.0, math.inf, [cmd]))
            continue
        items.append(Item(f.device_id, f.kind, KINDS[f.kind].response_s, _margin_kw(f, g, j), math.inf, [cmd]))
    for gname in sorted(tcl_groups):
        m = ctl.tcl.models.get(gname)
        held = np.flatnonzero(m.held) if m is not None else []
        items.append(Item(f"{gname}/*", "tcl", KINDS["tcl"].response_s, 0.0, math.inf,
                          [Command(f"{gname}/{int(j)}", "force", -1.0, SOURCE, REASON) for j in held]))
    dr_groups = [g for g in ctl.state.groups.values() if g.kind in DR_KINDS]
    since = src.emergency["since"] if src.emergency is not None else now
    restore = restore_plan([it for it in items if it.kind != "pv"], dr_groups, ctl.schedule_src.base_set,
                           spread_s=ctl.cfg.restore_spread_s)
    if pv_cmds:
        from controller.emergency import RestoreStep

        restore.insert(0, RestoreStep(0.0, [r for _, r in pv_cmds], "pv released"))
    shed = float(sum(it.margin_kw for it in items))
    src.plan = EmergencyPlan(now, "adopted from the field at start", items, shed, shed, None, math.inf, restore)
    src.restoring = None
    figures = {"shed_kw": round(shed, 3), "hold_s": None, "response_s": src.plan.response_s,
               "plan_margin_kw": round(shed, 3)}
    src.emergency = {"since": since, "by": "reconcile", "reason": "field held setpoints at start",
                     **figures, "plan": src._plan_view(), "adopted": True, "tcl_groups": sorted(tcl_groups)}
    ctl.hist.log_event(now, "emergency_on", by="reconcile", reason="field held setpoints at start",
                       plan=src._plan_rows(), adopted=True, tcl_groups=sorted(tcl_groups), **figures)


def _release(ctl, found: list[Finding], now: float) -> None:
    """Send each held setpoint back to neutral through the cycle (gated, carried to target)."""
    for f in found:
        if math.isfinite(f.neutral):
            ctl.operator_command(Command(f.device_id, f.setpoint, f.neutral, "operator",
                                         "reconcile: release a setpoint held in the field"))
