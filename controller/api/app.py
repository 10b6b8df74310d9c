"""FastAPI app over a running Controller: reads for viewers, actions for operators/admins.

Bearer tokens map to (user, role); roles are ordered viewer < operator < admin. Every write
(accepted or refused for lack of rights) lands in the historian's audit table. OpenAPI is at
/openapi.json and /docs.
"""

from __future__ import annotations

import math
import uuid

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from controller.commands import Command
from controller.state import Q_NAME

RANK = {"viewer": 0, "operator": 1, "admin": 2}


class DrEventIn(BaseModel):
    id: str | None = None
    start_t: float = Field(description="epoch seconds UTC")
    duration_s: float | None = Field(None, gt=0)
    end_t: float | None = None
    reduction_kw: float = Field(gt=0)
    groups: list[str] | None = None


class OptIn(BaseModel):
    opt: str = Field(pattern="^(in|out)$")


class ShedIn(BaseModel):
    reason: str = "operator"


class ServiceIn(BaseModel):
    in_service: bool = False


class CommandIn(BaseModel):
    device_id: str
    setpoint: str
    value: float


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def create_app(controller, tokens: dict[str, dict]) -> FastAPI:
    app = FastAPI(title="gridtwin VPP controller", version="0.1")
    bearer = HTTPBearer(auto_error=False)
    hist = controller.hist
    clock = controller.clock

    def who(cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> dict:
        if cred is None or cred.credentials not in tokens:
            raise HTTPException(401, "missing or unknown bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        return tokens[cred.credentials]

    def need(role: str):
        def dep(request: Request, user: dict = Depends(who)) -> dict:
            if RANK[user["role"]] < RANK[role]:
                hist.audit(clock.now(), user["user"], user["role"],
                           f"{request.method} {request.url.path}", "", {"denied": f"needs {role}"},
                           ok=False)
                raise HTTPException(403, f"role {user['role']!r} may not do this (needs {role})")
            return user
        return dep

    viewer, operator, admin = need("viewer"), need("operator"), need("admin")

    def audit(user, action, target="", data=None):
        hist.audit(clock.now(), user["user"], user["role"], action, target, data or {})

    # --- reads -----------------------------------------------------------------------------------
    @app.get("/api/whoami")
    def whoami(user: dict = Depends(viewer)):
        """Who the token belongs to and its role."""
        return user

    @app.get("/api/fleet")
    def fleet(user: dict = Depends(viewer)):
        """Per group: kind, count, usable devices, total p_kw; TCL groups add t_in_c (mean indoor
        temperature), comfort_pct (usable units inside their comfort band), on_pct, held_off and
        flexibility (virtual battery: up_kw, down_kw, energy_kwh); plus the reduction margin."""
        with controller.lock:
            groups = controller.state.summary()
            tcl = getattr(controller, "tcl", None)
            for name, extra in (tcl.summary() if tcl else {}).items():
                groups[name].update(extra)
            return {"t": controller.state.t, "groups": groups,
                    "margin": controller.margin(), "emergency": controller.emergency,
                    "cycle": controller.last_report}

    @app.get("/api/grid")
    def grid(user: dict = Depends(viewer)):
        """Feeder one-line data: the controller's network model with the RTU's latest bus
        voltages and branch loadings (null where not measured)."""
        net = getattr(controller, "feeder_net", None)
        with controller.lock:
            rtu = next((g for g in controller.state.groups.values() if g.kind == "rtu"), None)
            vals = {k: float(v[0]) for k, v in rtu.values.items()} if rtu is not None else {}
        if net is None or not vals:
            raise HTTPException(404, "no feeder model or no RTU measurements in this controller")

        def m(key):
            v = vals.get(key)
            return round(v, 5) if v is not None and np.isfinite(v) else None

        lim = getattr(controller, "feeder_limits", None)
        return {"t": controller.state.t, "root_bus": int(net.ext_grid.bus.iloc[0]),
                "v_min_pu": getattr(lim, "v_min_pu", 0.95), "v_max_pu": getattr(lim, "v_max_pu", 1.05),
                "buses": [{"id": int(b), "name": str(net.bus.at[b, "name"]), "v_pu": m(f"v_pu.{k}")}
                          for k, b in enumerate(net.bus.index)],
                "lines": [{"from_bus": int(r.from_bus), "to_bus": int(r.to_bus), "name": str(r.name),
                           "loading_pct": m(f"line_loading_pct.{k}")}
                          for k, r in enumerate(net.line.itertuples())],
                "trafos": [{"hv_bus": int(r.hv_bus), "lv_bus": int(r.lv_bus), "name": str(r.name),
                            "loading_pct": m(f"trafo_loading_pct.{k}")}
                           for k, r in enumerate(net.trafo.itertuples())],
                "head_p_kw": m("head_p_kw"), "head_q_kvar": m("head_q_kvar")}

    @app.get("/api/devices")
    def devices(offset: int = 0, limit: int = 100, unavailable: bool = False,
                user: dict = Depends(viewer)):
        """Devices with availability, service state and latest values (quality per value)."""
        rows = []
        with controller.lock:
            for g in controller.state.groups.values():
                usable = g.usable()
                for j, dev in enumerate(g.ids):
                    if unavailable and usable[j]:
                        continue
                    rows.append({"device_id": dev, "group": g.group, "kind": g.kind,
                                 "available": bool(g.available[j]), "in_service": bool(g.in_service[j]),
                                 "values": {k: {"value": _clean(float(v[j])),
                                                "quality": Q_NAME[int(g.quality[k][j])]}
                                            for k, v in g.values.items()}})
        return {"total": len(rows), "items": rows[offset:offset + max(0, min(limit, 1000))]}

    @app.get("/api/head")
    def head(window_s: float = 6 * 3600.0, user: dict = Depends(viewer)):
        """Feeder-head P/Q as the controller metered it (historian telemetry of the head meter,
        else the RTU's head measurement) over the last `window_s`, beside the schedule in force:
        the planned head P where the scheduler had a net-load forecast (`schedule_kind` "head"),
        else the planned battery total ("battery_total")."""
        with controller.lock:
            groups = list(controller.state.groups.values())
            sched = controller.schedule
            now = controller.state.t
        src = next(((g.ids[0], "p_kw", "q_kvar") for g in groups if g.kind == "meter" and g.n), None)
        src = src or next(((g.ids[0], "head_p_kw", "head_q_kvar") for g in groups
                           if g.kind == "rtu" and g.n), None)
        if src is None:
            raise HTTPException(404, "no feeder-head meter or RTU in this controller")
        dev, p_name, q_name = src
        window_s = float(min(max(window_s, 60.0), 7 * 86400.0))
        p, q = ({r["t"]: r["value"] for r in controller.hist.good_values(name, [dev], now - window_s, np.inf)}
                for name in (p_name, q_name))
        ts = sorted(p)
        out = {"device_id": dev, "t": ts, "p_kw": [p[t] for t in ts], "q_kvar": [q.get(t) for t in ts],
               "schedule_kind": None, "schedule_t": None, "schedule_p_kw": None}
        data = (sched or {}).get("data") or {}
        if sched and (data.get("head_p_kw") or data.get("setpoints")):
            if data.get("head_p_kw"):
                plan, kind = np.asarray(data["head_p_kw"], float), "head"
            else:
                plan = sum(np.asarray(v["values"], float).sum(axis=0) for v in data["setpoints"].values())
                kind = "battery_total"
            out.update(schedule_kind=kind,
                       schedule_t=(sched["t0"] + sched["step_s"] * np.arange(len(plan))).tolist(),
                       schedule_p_kw=np.round(plan, 3).tolist())
        return out

    @app.get("/api/schedule")
    def schedule(user: dict = Depends(viewer)):
        """The schedule in force (battery setpoint series per group), or null."""
        return controller.schedule

    @app.get("/api/dr/events")
    def dr_events(user: dict = Depends(viewer)):
        """All DR events with status and metered performance."""
        with controller.lock:
            return [{**e.as_row(), **e.performance()} for e in controller.dr.values()]

    @app.get("/api/alarms")
    def alarms(active: bool = False, user: dict = Depends(viewer)):
        return hist.alarms(active_only=active)

    @app.get("/api/gate")
    def gate(user: dict = Depends(viewer)):
        """The last cycle's gate decisions that were not plain accepts."""
        r = controller.last_gate
        if r is None:
            return []
        return [d.as_dict() for d in r.decisions if d.verdict != "accepted"]

    @app.get("/api/gate/summary")
    def gate_summary(user: dict = Depends(viewer)):
        """Which gate guards the writes, decision totals since start, the last check's report."""
        rep = getattr(controller.gate, "last_report", None) or {}
        return {"gate": controller.gate_name(), "totals": dict(controller.gate_totals),
                "last_report": {k: _clean(float(v)) if isinstance(v, (int, float)) else v
                                for k, v in rep.items()}}

    @app.get("/api/history/{table}")
    def history(table: str, since: float | None = None, until: float | None = None,
                device_id: str | None = None, limit: int = 1000, user: dict = Depends(viewer)):
        """Historian rows: cycles, telemetry, setpoints, decisions, events, dr_events, ..."""
        try:
            return hist.query(table, since, until, device_id, limit)
        except ValueError as e:
            raise HTTPException(404, str(e)) from None

    @app.get("/api/audit")
    def audit_trail(limit: int = 100, user: dict = Depends(operator)):
        return hist.query("audit", limit=limit)

    # --- writes (operator+) ------------------------------------------------------------------------
    @app.post("/api/dr/events", status_code=201)
    def create_dr(ev: DrEventIn, user: dict = Depends(operator)):
        """Create a DR event (duration_s or end_t)."""
        dur = ev.duration_s if ev.duration_s is not None else (
            (ev.end_t - ev.start_t) if ev.end_t is not None else None)
        if dur is None or dur <= 0:
            raise HTTPException(422, "give duration_s > 0 or end_t after start_t")
        eid = ev.id or f"api-{uuid.uuid4().hex[:8]}"
        try:
            e = controller.add_dr_event(eid, ev.start_t, dur, ev.reduction_kw, ev.groups, source="api")
        except ValueError as err:
            raise HTTPException(409, str(err)) from None
        audit(user, "dr_create", eid, ev.model_dump())
        return e.as_row()

    @app.post("/api/dr/events/{event_id}/cancel")
    def cancel_dr(event_id: str, user: dict = Depends(operator)):
        ok = controller.cancel_dr_event(event_id)
        audit(user, "dr_cancel", event_id, {"ok": ok})
        if not ok:
            raise HTTPException(404, f"no pending/active DR event {event_id!r}")
        return {"id": event_id, "status": "cancelled"}

    @app.post("/api/dr/events/{event_id}/opt")
    def opt_dr(event_id: str, body: OptIn, user: dict = Depends(operator)):
        if not controller.set_opt(event_id, body.opt):
            raise HTTPException(404, f"no DR event {event_id!r}")
        audit(user, "dr_opt", event_id, body.model_dump())
        return {"id": event_id, "opt": body.opt}

    @app.post("/api/alarms/{alarm_id}/ack")
    def ack(alarm_id: int, user: dict = Depends(operator)):
        ok = hist.ack_alarm(alarm_id, user["user"], clock.now())
        audit(user, "alarm_ack", str(alarm_id), {"ok": ok})
        if not ok:
            raise HTTPException(404, f"no alarm {alarm_id}")
        return {"id": alarm_id, "acked_by": user["user"]}

    @app.post("/api/emergency/shed")
    def shed(body: ShedIn, user: dict = Depends(operator)):
        """Shed every flexible resource now; returns the margin and battery hold time."""
        m = controller.set_emergency(True, by=user["user"], reason=body.reason)
        audit(user, "emergency_shed", "", body.model_dump())
        return m

    @app.post("/api/emergency/restore")
    def restore(user: dict = Depends(operator)):
        m = controller.set_emergency(False, by=user["user"])
        audit(user, "emergency_restore")
        return m

    @app.post("/api/devices/{device_id:path}/out_of_service")
    def out_of_service(device_id: str, body: ServiceIn | None = None, user: dict = Depends(operator)):
        """Force a device out of (or back into, with in_service=true) dispatch."""
        ins = body.in_service if body else False
        try:
            controller.set_in_service(device_id, ins, by=user["user"])
        except KeyError as e:
            raise HTTPException(404, str(e)) from None
        audit(user, "device_service", device_id, {"in_service": ins})
        return {"device_id": device_id, "in_service": ins}

    @app.post("/api/commands", status_code=202)
    def command(body: CommandIn, user: dict = Depends(operator)):
        """Queue an operator setpoint; it goes through the safety gate on the next cycle."""
        if not np.isfinite(body.value):
            raise HTTPException(422, "value must be finite")
        try:
            controller.operator_command(Command(body.device_id, body.setpoint, body.value,
                                                "operator", user["user"]))
        except KeyError as e:
            raise HTTPException(404, str(e)) from None
        audit(user, "command", body.device_id, body.model_dump())
        return {"queued": True}

    return app
