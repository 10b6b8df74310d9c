"""Emergency command source: the plan is what is sent.

`shed(by, reason)` plans the shed now (controller.emergency.plan_emergency over the fleet's
device kinds and TCL groups); every cycle while it lasts the plan's commands are sent (TCL
groups held off by their switching law, which respects lockouts and releases a unit before it
leaves its comfort band). `restore(by, reason)` executes the plan's staged restore from that
moment: each device keeps its shed value until its step is due, then gets its kind's released
value (a ramp-limited one is carried to its target by the cycle); TCL groups go back in the
plan's cohorts. The active emergency, its plan and a restore in progress are kept in the
historian (events emergency_on / emergency_off / emergency_restored), so a restarted
controller resumes them instead of forgetting a shed field.
"""

from __future__ import annotations

import logging

import numpy as np

from controller.commands import Command
from controller.emergency import plan_emergency
from controller.kinds import DR_KINDS, KINDS

log = logging.getLogger("controller.emergency")


class EmergencySource:
    name, priority = "emergency", 0

    def __init__(self, ctl):
        self.ctl = ctl  # state, hist, tcl, clock; schedule_src.base_set
        self.emergency: dict | None = None  # what the API shows while shed
        self.plan = None
        self.restoring: dict | None = None  # {"t", "steps", "done", "tcl_n"} during a staged restore

    @property
    def active(self) -> bool:
        return self.emergency is not None

    # --- figures ----------------------------------------------------------------------------------
    def margin(self) -> dict:
        """Adjustable load-reduction margin now (kW) and how long batteries can hold theirs."""
        ctl = self.ctl
        total, bat_kw, bat_kwh = 0.0, 0.0, 0.0
        for g in ctl.state.groups.values():
            if g.kind not in DR_KINDS:
                continue
            k = KINDS[g.kind]
            base = k.baseline_kw(g, ctl.schedule_src.base_set.get(g.group))
            h = k.headroom_kw(g, base, 1e-3 if g.kind == "battery" else 1.0)
            total += float(h.sum())
            if g.kind == "battery":
                bat_kw += float(h.sum())
                bat_kwh += float(np.nan_to_num(k.energy_kwh(g))[g.usable()].sum())
        tcl_kw = ctl.tcl.margin_kw()
        total += tcl_kw
        return {"margin_kw": round(total, 3), "battery_kw": round(bat_kw, 3), "tcl_kw": round(tcl_kw, 3),
                "battery_hold_s": round(3600.0 * bat_kwh / bat_kw, 1) if bat_kw > 0 else 0.0}

    def make_plan(self, reason: str = "operator"):
        ctl = self.ctl
        now = ctl.clock.now()
        return plan_emergency(ctl.state.groups.values(), now, reason=reason,
                              tcl_groups=ctl.tcl.tcl_groups(now), base_set=ctl.schedule_src.base_set,
                              restore_spread_s=ctl.cfg.restore_spread_s)

    @staticmethod
    def plan_figures(plan) -> dict:
        return {"plan_margin_kw": round(plan.margin_kw, 3), "shed_kw": round(plan.shed_kw, 3),
                "hold_s": round(plan.hold_s, 1) if np.isfinite(plan.hold_s) else None,
                "response_s": plan.response_s,
                "by_kind": {k: round(sum(it.margin_kw for it in plan.items if it.kind == k), 3)
                            for k in sorted({it.kind for it in plan.items})}}

    # --- operator actions -------------------------------------------------------------------------
    def shed(self, by: str = "operator", reason: str = "") -> dict:
        ctl = self.ctl
        now = ctl.clock.now()
        m = self.margin()
        try:
            self.plan = self.make_plan(reason or "operator")
        except Exception as e:  # noqa: BLE001 - a planning fault must not block the shed
            log.warning("emergency plan failed: %s", e)
            m["plan_error"] = str(e)[:200]
            self.plan = None
        if self.plan is not None:
            m.update(self.plan_figures(self.plan))
        self.restoring = None
        self.emergency = {"since": now, "by": by, "reason": reason,
                          **{k: m.get(k) for k in ("shed_kw", "hold_s", "response_s", "plan_margin_kw")},
                          "plan": self._plan_view()}
        ctl.hist.log_event(now, "emergency_on", by=by, reason=reason, plan=self._plan_rows(),
                           **{k: v for k, v in m.items() if k != "resources"})
        return m

    def restore(self, by: str = "operator", reason: str = "") -> dict:
        ctl = self.ctl
        now = ctl.clock.now()
        m = self.margin()
        if self.emergency is not None and self.plan is not None:
            self._start_restore(now)
        self.emergency = None
        ctl.hist.log_event(now, "emergency_off", by=by, reason=reason, **m)
        return m

    def _start_restore(self, now: float) -> None:
        n_tcl = {g: int(m.held.sum()) for g, m in self.ctl.tcl.models.items()}
        self.restoring = {"t": now, "done": set(), "tcl_n": n_tcl}

    # --- the plan as rows (historian) and as the API shows it ---------------------------------------
    def _plan_rows(self) -> dict | None:
        p = self.plan
        if p is None:
            return None
        return {"t": p.t, "reason": p.reason, "margin_kw": p.margin_kw, "shed_kw": p.shed_kw,
                "hold_s": p.hold_s if np.isfinite(p.hold_s) else None, "response_s": p.response_s,
                "commands": [(c.device_id, c.setpoint, c.value) for c in p.commands],
                "restore": [(s.delay_s, s.note, [(c.device_id, c.setpoint, c.value) for c in s.commands])
                            for s in p.restore]}

    def _plan_view(self) -> dict | None:
        p = self.plan
        if p is None:
            return None
        return {**p.summary(), "restore": [{"delay_s": s.delay_s, "note": s.note, "commands": len(s.commands)}
                                           for s in p.restore]}

    def resume(self) -> None:
        """The last emergency state in the historian: still shed, or a restore under way."""
        hist = self.ctl.hist
        last = max((dict(r, kind=k) for k in ("emergency_on", "emergency_off", "emergency_restored")
                    for r in hist.events_of(k)[-1:]), key=lambda r: r["t"], default=None)
        if last is None or last["kind"] == "emergency_restored":
            return
        on = hist.events_of("emergency_on")[-1] if hist.events_of("emergency_on") else None
        if on is None or not on.get("plan"):
            return
        self.plan = _plan_from_rows(on["plan"])
        if last["kind"] == "emergency_on":
            self.emergency = {"since": on["t"], "by": on.get("by"), "reason": on.get("reason"),
                              **{k: on.get(k) for k in ("shed_kw", "hold_s", "response_s", "plan_margin_kw")},
                              "plan": self._plan_view(), "resumed": True,
                              **{k: on[k] for k in ("adopted", "tcl_groups") if k in on}}
        else:
            self.restoring = {"t": last["t"], "done": set(), "tcl_n": {}}

    # --- the cycle ------------------------------------------------------------------------------------
    def commands(self, t: float, state) -> list[Command]:
        if self.emergency is not None:
            return self._shed_commands(t)
        if self.restoring is not None:
            return self._restore_commands(t)
        return []

    def _usable(self, dev: str) -> bool:
        g, j = self.ctl._index.get(dev, (None, 0))
        return g is not None and bool(self.ctl.state.groups[g].usable()[j])

    def _shed_commands(self, t: float) -> list[Command]:
        out = []
        if self.plan is not None:
            out = [c for c in self.plan.commands if KINDS[self._kind(c.device_id)].group_dispatch is False
                   and self._usable(c.device_id)]
        only = self.emergency.get("tcl_groups") if self.emergency.get("adopted") else None
        for name, m in self.ctl.tcl.models.items():
            if only is None or name in only:  # adopted (controller/reconcile.py): groups found forced
                out += m.emergency_commands(t)
        return out

    def _kind(self, dev: str) -> str:
        g, _ = self.ctl._index.get(dev, (None, 0))
        return self.ctl.state.groups[g].kind if g is not None else "meter"

    def _restore_commands(self, t: float) -> list[Command]:
        r = self.restoring
        elapsed = t - r["t"]
        shed = {(c.device_id, c.setpoint): c for c in (self.plan.commands if self.plan else [])}
        out, pending = [], 0
        steps = self.plan.restore if self.plan else []
        tcl_steps = {}
        for s in steps:
            for c in s.commands:
                kind = KINDS[self._kind(c.device_id)]
                if kind.group_dispatch:
                    grp = c.device_id.rpartition("/")[0]
                    n_due, n_all = tcl_steps.get(grp, (0, 0))
                    tcl_steps[grp] = (n_due + (1 if s.delay_s <= elapsed else 0), n_all + 1)
                    continue
                key = (c.device_id, c.setpoint)
                if s.delay_s <= elapsed:
                    if key not in r["done"]:
                        r["done"].add(key)
                        if self._usable(c.device_id):
                            out.append(c)
                elif key in shed:
                    pending += 1
                    if self._usable(c.device_id):
                        out.append(shed[key])  # held until its step is due
        for gname, m in self.ctl.tcl.models.items():  # TCLs back in the plan's cohorts
            n0 = r["tcl_n"].get(gname, int(m.held.sum()))
            n_due, n_all = tcl_steps.get(f"{gname}", (1, 1)) if tcl_steps else (1, 1)
            keep = int(np.ceil(n0 * (1.0 - n_due / max(n_all, 1))))
            over = int(m.held.sum()) - keep
            if over > 0:
                out += m.release_all(self.name, "emergency restore", cohort=over)
            pending += int(m.held.sum())
        if pending == 0:
            self.restoring = None
            self.ctl.hist.log_event(t, "emergency_restored")
        return out


def _plan_from_rows(d: dict):
    """An EmergencyPlan rebuilt from its historian rows (commands and restore steps)."""
    from controller.emergency import EmergencyPlan, Item, RestoreStep

    src = "emergency"
    items = [Item(dev, "", 0.0, 0.0, 0.0, [Command(dev, sp, float(v), src, "emergency shed")])
             for dev, sp, v in d.get("commands", [])]
    restore = [RestoreStep(float(delay), [Command(dev, sp, float(v), src, "emergency restore")
                                          for dev, sp, v in cmds], note)
               for delay, note, cmds in d.get("restore", [])]
    hold = d.get("hold_s")
    return EmergencyPlan(d.get("t", 0.0), d.get("reason", ""), items, d.get("margin_kw", 0.0),
                         d.get("shed_kw", 0.0), None, float("inf") if hold is None else hold, restore)
