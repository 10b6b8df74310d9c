"""FastAPI app over a running Controller: reads for viewers, actions for operators/admins.

Bearer tokens map to (user, role) (controller.security.tokens: hashed, compared in constant
time); roles are ordered viewer < operator < admin. Every refused request (401 and 403) and
every write lands in the historian's audit table (refusals rate-limited). OpenAPI is at
/openapi.json and /docs; Prometheus metrics at /metrics (viewer token).

Reads never wait on the cycle: they serve a snapshot of the controller (controller.api.view)
and query the historian on their own SQLite connection; history is paged (`before` cursor,
`X-Next-Before` header) and bounded. The emergency endpoints are async and run on their own
thread, so a queue of slow reads in the worker pool cannot hold them up. Inputs are finite,
bounded numbers and safe ids; request bodies are size-limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import re
import sys
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import anyio.to_thread
import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from controller.api.guard import DEVICE_ID, INT64_MAX, SAFE_ID, BodyLimit, CycleFirst, DeniedAudit
from controller.api.view import StateView
from controller.api_settings import ApiSettings
from controller.commands import Command
from controller.metrics import CONTENT_TYPE, ControllerMetrics
from controller.security.tokens import TokenStore
from controller.state import Q_NAME

log = logging.getLogger("controller.api")
RANK = {"viewer": 0, "operator": 1, "admin": 2}
FINITE = ConfigDict(allow_inf_nan=False, extra="forbid")
MAX_VALUE = 1e7  # |kW| or any setpoint beyond this is nonsense for a distribution-level VPP


class DrEventIn(BaseModel):
    model_config = FINITE
    id: str | None = Field(None, pattern=SAFE_ID)
    start_t: float = Field(description="epoch seconds UTC")
    duration_s: float | None = Field(None, gt=0)
    end_t: float | None = None
    reduction_kw: float = Field(gt=0, le=MAX_VALUE)
    groups: list[str] | None = Field(None, max_length=64)


class OptIn(BaseModel):
    model_config = FINITE
    opt: str = Field(pattern="^(in|out)$")


class ShedIn(BaseModel):
    model_config = FINITE
    reason: str = Field("operator", max_length=200)


class ServiceIn(BaseModel):
    model_config = FINITE
    in_service: bool = False


class CommandIn(BaseModel):
    model_config = FINITE
    device_id: str = Field(pattern=DEVICE_ID)
    setpoint: str = Field(pattern=SAFE_ID)
    value: float = Field(ge=-MAX_VALUE, le=MAX_VALUE)


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def _dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False,
                      default=lambda o: o.item() if hasattr(o, "item") else str(o))


def _json(obj, headers: dict | None = None, pause=None) -> Response:
    """Encode in the worker thread that built the rows: FastAPI would run jsonable_encoder over
    a large result on the event loop, where it holds up every other request (the shed too).
    A long list is encoded in chunks with `pause()` between them (steps aside for the cycle)."""
    if pause is not None and isinstance(obj, list) and len(obj) > 500:
        parts = []
        for k in range(0, len(obj), 500):
            parts.append(_dumps(obj[k:k + 500])[1:-1])
            pause()
        body = "[" + ",".join(p for p in parts if p) + "]"
    else:
        body = _dumps(obj)
    return Response(body, media_type="application/json", headers=headers)


class DeliveryWatch:
    """Under-delivery alarm: an active DR event whose metered reduction, averaged over the
    last `window_s`, stays below `pct` % of the request raises `dr_under_delivery`."""

    def __init__(self, ctl, pct: float, window_s: float):
        self.ctl, self.pct, self.window_s = ctl, pct, window_s
        self.alarmed: set[str] = set()

    def check(self, snap) -> None:
        cycle_s = float(getattr(getattr(self.ctl, "cfg", None), "cycle_s", 60.0) or 60.0)
        k = max(1, math.ceil(self.window_s / cycle_s))
        active = {e["id"]: e for e in snap.dr if e.get("status") == "active"}
        for eid, samples in snap.dr_samples.items():
            ev = active.get(eid)
            if ev is None or len(samples) < k:
                continue
            mean = float(np.mean(samples[-k:]))
            low = mean < self.pct / 100.0 * ev["reduction_kw"]
            if low and eid not in self.alarmed:
                self.alarmed.add(eid)
                self.ctl.hist.raise_alarm(self.ctl.clock.now(), "dr_under_delivery", eid,
                                          f"DR event {eid}: {mean:.1f} of {ev['reduction_kw']:g} kW "
                                          f"({100 * mean / ev['reduction_kw']:.0f} % < {self.pct:g} %) "
                                          f"over the last {self.window_s:g} s")
            elif not low and eid in self.alarmed:
                self.alarmed.discard(eid)
                self.ctl.hist.clear_alarm("dr_under_delivery", eid)
        for eid in [e for e in self.alarmed if e not in active]:
            self.alarmed.discard(eid)
            self.ctl.hist.clear_alarm("dr_under_delivery", eid)


def create_app(controller, tokens: TokenStore | dict[str, dict],
               settings: ApiSettings | None = None, watch_s: float = 0.2) -> FastAPI:
    """The API over `controller`. `watch_s`: how often a background thread refreshes the
    snapshot and checks DR delivery (0: only on requests)."""
    st = settings or ApiSettings()
    # a thread waiting for the GIL after I/O (the cycle, many times per cycle) waits one switch
    # interval at most; 5 ms (the default) per Modbus/SQLite step starves a cycle under API load
    sys.setswitchinterval(min(sys.getswitchinterval(), 0.001))
    store = tokens if isinstance(tokens, TokenStore) else TokenStore(tokens)
    stop = threading.Event()
    urgent = ThreadPoolExecutor(1, thread_name_prefix="api-emergency")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # sync endpoints share 8 worker threads (not anyio's 40): fewer threads to take the GIL
        # from the cycle; the emergency endpoints have their own thread
        anyio.to_thread.current_default_thread_limiter().total_tokens = 8
        yield
        stop.set()
        urgent.shutdown(wait=False)

    app = FastAPI(title="gridtwin VPP controller", version="0.2", lifespan=lifespan)
    app.add_middleware(BodyLimit, max_bytes=st.max_body_bytes)
    view = StateView(controller)
    app.add_middleware(CycleFirst, busy=view.cycle_running)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError):
        """422 naming field and problem; the offending input only as a short repr (it may be
        NaN, which JSON cannot carry, or a megabyte of text)."""
        return JSONResponse({"detail": [{"loc": list(e.get("loc", ())), "msg": e.get("msg", ""),
                                         "type": e.get("type", ""), "input": repr(e.get("input"))[:80]}
                                        for e in exc.errors()[:10]]}, 422)
    bearer = HTTPBearer(auto_error=False)
    hist = controller.hist
    clock = controller.clock
    metrics = ControllerMetrics(view, hist)
    denied = DeniedAudit(hist, clock, st.denied_audit_per_min, metrics.denied)
    watch = DeliveryWatch(controller, st.dr_under_delivery_pct, st.dr_under_delivery_s)
    history_slots = threading.BoundedSemaphore(2)  # heavy reads take turns; the cycle keeps its share
    app.state.view, app.state.metrics, app.state.stop = view, metrics, stop

    def watcher():
        while not stop.wait(watch_s):
            try:
                if view.refresh():
                    watch.check(view.get())
            except Exception:  # supervision must outlive a bad snapshot
                log.exception("API watcher")

    if watch_s > 0:
        threading.Thread(target=watcher, name="api-watch", daemon=True).start()

    def client(request: Request) -> str:
        return request.client.host if request.client else "?"

    async def who(request: Request,
                  cred: HTTPAuthorizationCredentials | None = Depends(bearer)) -> dict:
        user = store.lookup(cred.credentials if cred else None)
        if user is None:
            denied(401, "", "", f"{request.method} {request.url.path}",
                   "no bearer token" if cred is None else "unknown bearer token", client(request))
            raise HTTPException(401, "missing or unknown bearer token",
                                headers={"WWW-Authenticate": "Bearer"})
        return user

    def refuse(request: Request, user: dict, role: str):
        denied(403, user["user"], user["role"], f"{request.method} {request.url.path}",
               f"needs {role}", client(request))
        raise HTTPException(403, f"role {user['role']!r} may not do this (needs {role})")

    def need(role: str):
        async def dep(request: Request, user: dict = Depends(who)) -> dict:
            if RANK[user["role"]] < RANK[role]:
                refuse(request, user, role)
            return user
        return dep

    viewer, operator = need("viewer"), need("operator")

    def audit(user, action, target="", data=None):
        hist.audit(clock.now(), user["user"], user["role"], action, target, data or {})
        view.invalidate()

    # --- reads (snapshot; never the cycle's lock) -------------------------------------------------
    @app.get("/api/whoami")
    def whoami(user: dict = Depends(viewer)):
        """Who the token belongs to and its role."""
        return user

    @app.get("/api/fleet")
    def fleet(user: dict = Depends(viewer)):
        """Per group: kind, count, usable devices, total p_kw; TCL groups add t_in_c (mean indoor
        temperature), comfort_pct (usable units inside their comfort band), on_pct, held_off and
        flexibility (virtual battery: up_kw, down_kw, energy_kwh); plus the reduction margin.
        `cycle` is the last cycle's report; `snapshot_cycle` the cycle this picture is from."""
        view.yield_to_cycle()
        s = view.get()
        return {"t": s.t, "groups": s.summary, "margin": s.margin, "emergency": s.emergency,
                "cycle": s.last_report, "snapshot_cycle": s.n_cycle}

    @app.get("/api/grid")
    def grid(user: dict = Depends(viewer)):
        """Feeder one-line data: the controller's network model with the RTU's latest bus
        voltages and branch loadings (null where not measured)."""
        net = getattr(controller, "feeder_net", None)
        s = view.get()
        rtu = next((g for g in s.groups if g[1] == "rtu"), None)
        vals = {k: float(v[0]) for k, v in rtu[6].items()} if rtu is not None else {}
        if net is None or not vals:
            raise HTTPException(404, "no feeder model or no RTU measurements in this controller")

        def m(key):
            v = vals.get(key)
            return round(v, 5) if v is not None and np.isfinite(v) else None

        lim = getattr(controller, "feeder_limits", None)
        return {"t": s.t, "root_bus": int(net.ext_grid.bus.iloc[0]),
                "v_min_pu": getattr(lim, "v_min_pu", 0.95), "v_max_pu": getattr(lim, "v_max_pu", 1.05),
                "buses": [{"id": int(b), "name": str(net.bus.at[b, "name"]), "v_pu": m(f"v_pu.{k}")}
                          for k, b in enumerate(net.bus.index)],
                "lines": [{"from_bus": int(r.from_bus), "to_bus": int(r.to_bus), "name": str(r.name),
                           "loading_pct": m(f"line_loading_pct.{k}")}
                          for k, r in enumerate(net.line.itertuples())],
                "trafos": [{"hv_bus": int(r.hv_bus), "lv_bus": int(r.lv_bus), "name": str(r.name),
                            "loading_pct": m(f"trafo_loading_pct.{k}")}
                           for k, r in enumerate(net.trafo.itertuples())],
                "switches": [{"from_bus": int(r.bus), "to_bus": int(r.element), "name": str(r.name),
                              "closed": bool(r.closed)}  # bus-bus switches join the one-line
                             for r in net.switch.itertuples() if r.et == "b"] if len(net.switch) else [],
                "der": s.der,  # managed devices per bus and kind (count, P in kW, load +)
                "head_p_kw": m("head_p_kw"), "head_q_kvar": m("head_q_kvar")}

    @app.get("/api/devices")
    def devices(offset: int = Query(0, ge=0, le=10**9), limit: int = Query(100, ge=1, le=1000),
                unavailable: bool = False, user: dict = Depends(viewer)):
        """Devices with availability, service state and latest values (quality per value:
        good, stale, invalid, missing, suspect)."""
        s = view.get()
        rows = []
        view.yield_to_cycle()
        for group, kind, ids, usable, avail, insvc, values, quality, _ in s.groups:
            for j, dev in enumerate(ids):
                if unavailable and usable[j]:
                    continue
                rows.append((group, kind, j, dev, avail, insvc, values, quality))
        items = [{"device_id": dev, "group": group, "kind": kind,
                  "available": bool(avail[j]) if avail is not None else True,
                  "in_service": bool(insvc[j]) if insvc is not None else True,
                  "values": {k: {"value": _clean(float(v[j])), "quality": Q_NAME.get(int(quality[k][j]), "?")}
                             for k, v in values.items()}}
                 for group, kind, j, dev, avail, insvc, values, quality in rows[offset:offset + limit]]
        return _json({"total": len(rows), "items": items})

    @app.get("/api/head")
    def head(window_s: float = Query(6 * 3600.0, allow_inf_nan=False), user: dict = Depends(viewer)):
        """Feeder-head P/Q as the controller metered it (historian telemetry of the head meter,
        else the RTU's head measurement) over the last `window_s`, beside the schedule in force:
        the planned head P where the scheduler had a net-load forecast (`schedule_kind` "head"),
        else the planned battery total ("battery_total")."""
        view.yield_to_cycle()
        s = view.get()
        src = next(((g[2][0], "p_kw", "q_kvar") for g in s.groups if g[1] == "meter" and g[2]), None)
        src = src or next(((g[2][0], "head_p_kw", "head_q_kvar") for g in s.groups
                           if g[1] == "rtu" and g[2]), None)
        if src is None:
            raise HTTPException(404, "no feeder-head meter or RTU in this controller")
        dev, p_name, q_name = src
        window_s = float(min(max(window_s, 60.0), 7 * 86400.0))
        with history_slots:
            p, q = ({r["t"]: r["value"] for r in hist.good_values(name, [dev], s.t - window_s, np.inf)}
                    for name in (p_name, q_name))
        ts = sorted(p)
        out = {"device_id": dev, "t": ts, "p_kw": [p[t] for t in ts], "q_kvar": [q.get(t) for t in ts],
               "schedule_kind": None, "schedule_t": None, "schedule_p_kw": None}
        sched = s.schedule
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
        return view.get().schedule

    @app.get("/api/dr/events")
    def dr_events(user: dict = Depends(viewer)):
        """All DR events with status and metered performance."""
        view.yield_to_cycle()
        return [{k: _clean(v) for k, v in e.items()} for e in view.get().dr]

    @app.get("/api/alarms")
    def alarms(active: bool = False, limit: int = Query(1000, ge=1, le=10**9), user: dict = Depends(viewer)):
        """Alarms, oldest first: the newest `limit` (at most api.history_page_rows)."""
        view.yield_to_cycle()
        return _json(hist.alarms(active_only=active, limit=min(limit, st.history_page_rows)))

    @app.get("/api/gate")
    def gate(user: dict = Depends(viewer)):
        """The last cycle's gate decisions that were not plain accepts."""
        return view.get().gate_decisions

    @app.get("/api/gate/summary")
    def gate_summary(user: dict = Depends(viewer)):
        """Which gate guards the writes, decision totals since start, the last check's report."""
        s = view.get()
        return {"gate": controller.gate_name(), "totals": s.gate_totals,
                "last_report": {k: _clean(float(v)) if isinstance(v, (int, float)) else v
                                for k, v in s.gate_report.items()}}

    @app.get("/api/history/{table}")
    def history(request: Request, table: str = Path(pattern=SAFE_ID),
                since: float | None = Query(None, allow_inf_nan=False),
                until: float | None = Query(None, allow_inf_nan=False),
                device_id: str | None = Query(None, pattern=DEVICE_ID),
                limit: int = Query(1000, ge=1, le=10**9),
                before: int | None = Query(None, ge=1, le=INT64_MAX),
                user: dict = Depends(viewer)):
        """Historian rows (cycles, telemetry, setpoints, decisions, events, dr_events, ...), the
        newest `limit` (at most api.history_page_rows) oldest first; page back with
        `before=<X-Next-Before of the previous page>`. The audit table needs an operator."""
        if table == "audit" and RANK[user["role"]] < RANK["operator"]:
            refuse(request, user, "operator")
        with history_slots:
            try:
                rows = hist.query(table, since, until, device_id, min(limit, st.history_page_rows),
                                  before=before, with_rowid=True, pause=view.yield_to_cycle)
            except ValueError as e:
                raise HTTPException(404, str(e)) from None
        more = len(rows) >= min(limit, st.history_page_rows)
        headers = {"X-Next-Before": str(rows[0]["_rowid"])} if more else None
        for r in rows:
            del r["_rowid"]
            for k, v in r.items():
                if isinstance(v, float) and not math.isfinite(v):
                    r[k] = None
        return _json(rows, headers, pause=view.yield_to_cycle)

    @app.get("/api/audit")
    def audit_trail(limit: int = Query(100, ge=1, le=10**9), user: dict = Depends(operator)):
        with history_slots:
            return _json(hist.query("audit", limit=min(limit, st.history_page_rows)))

    @app.get("/metrics")
    def prometheus(user: dict = Depends(viewer)):
        """Prometheus text format: cycle time by part, devices by quality, gate verdicts, DR
        requested vs delivered, margin, emergency, alarms, refused API requests."""
        view.yield_to_cycle()
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    # --- writes (operator+) ------------------------------------------------------------------------
    @app.post("/api/dr/events", status_code=201)
    def create_dr(ev: DrEventIn, user: dict = Depends(operator)):
        """Create a DR event (duration_s or end_t). Bounded: start within api.dr_start_window_s
        of now, duration up to api.dr_max_duration_s, reduction up to dr_max_reduction_factor x
        the fleet's rated flexible power. Above the margin now: 409 (dr_beyond_margin: reject)
        or accepted with `warnings` and a `dr_beyond_margin` alarm (warn)."""
        now = clock.now()
        if ev.duration_s is not None and ev.end_t is not None:
            raise HTTPException(422, "give duration_s or end_t, not both")
        dur = ev.duration_s if ev.duration_s is not None else (
            (ev.end_t - ev.start_t) if ev.end_t is not None else None)
        if dur is None or not dur > 0:
            raise HTTPException(422, "give duration_s > 0 or end_t after start_t")
        if dur > st.dr_max_duration_s:
            raise HTTPException(422, f"duration {dur:g} s is longer than {st.dr_max_duration_s:g} s")
        if abs(ev.start_t - now) > st.dr_start_window_s:
            raise HTTPException(422, f"start_t {ev.start_t:.0f} is more than {st.dr_start_window_s:g} s "
                                     f"from now ({now:.0f})")
        for g in ev.groups or []:
            if not isinstance(g, str) or len(g) > 64:
                raise HTTPException(422, "groups: names of at most 64 characters")
        s = view.get()
        known = {g[0] for g in s.groups}
        bad = [g for g in ev.groups or [] if g not in known]
        if bad:
            raise HTTPException(422, f"unknown group {bad[0][:64]!r}; known: {sorted(known)}")
        cap = s.fleet_capacity_kw()
        if ev.reduction_kw > st.dr_max_reduction_factor * cap:
            raise HTTPException(422, f"reduction_kw {ev.reduction_kw:g} is more than "
                                     f"{st.dr_max_reduction_factor:g} x the fleet's {cap:.1f} kW")
        margin = s.margin.get("margin_kw")
        warnings = []
        if margin is not None and ev.reduction_kw > margin:
            msg = (f"reduction {ev.reduction_kw:g} kW is above the margin available now "
                   f"({margin:.1f} kW): expect about {100 * margin / ev.reduction_kw:.0f} % delivery")
            if st.dr_beyond_margin == "reject":
                audit(user, "dr_create_refused", ev.id or "", {**ev.model_dump(), "why": msg})
                raise HTTPException(409, msg)
            warnings.append(msg)
        eid = ev.id or f"api-{uuid.uuid4().hex[:8]}"
        try:
            e = controller.add_dr_event(eid, ev.start_t, dur, ev.reduction_kw, ev.groups, source="api")
        except ValueError as err:
            raise HTTPException(409, str(err)) from None
        if warnings:
            hist.raise_alarm(now, "dr_beyond_margin", eid, warnings[0])
        audit(user, "dr_create", eid, {**ev.model_dump(), "warnings": warnings})
        return {**e.as_row(), "warnings": warnings}

    @app.post("/api/dr/events/{event_id}/cancel")
    def cancel_dr(event_id: str = Path(pattern=SAFE_ID), user: dict = Depends(operator)):
        ok = controller.cancel_dr_event(event_id)
        audit(user, "dr_cancel", event_id, {"ok": ok})
        if not ok:
            raise HTTPException(404, f"no pending/active DR event {event_id!r}")
        return {"id": event_id, "status": "cancelled"}

    @app.post("/api/dr/events/{event_id}/opt")
    def opt_dr(body: OptIn, event_id: str = Path(pattern=SAFE_ID), user: dict = Depends(operator)):
        if not controller.set_opt(event_id, body.opt):
            raise HTTPException(404, f"no DR event {event_id!r}")
        audit(user, "dr_opt", event_id, body.model_dump())
        return {"id": event_id, "opt": body.opt}

    @app.post("/api/alarms/{alarm_id}/ack")
    def ack(alarm_id: int = Path(ge=1, le=INT64_MAX), user: dict = Depends(operator)):
        ok = hist.ack_alarm(alarm_id, user["user"], clock.now())
        audit(user, "alarm_ack", str(alarm_id), {"ok": ok})
        if not ok:
            raise HTTPException(404, f"no alarm {alarm_id}")
        return {"id": alarm_id, "acked_by": user["user"]}

    async def urgently(fn, *args, **kw):
        """Run on the emergency thread: never queued behind reads in the worker pool; heavy
        reads and new requests step aside meanwhile (view.urgent)."""
        view.urgent += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(urgent, lambda: fn(*args, **kw))
        finally:
            view.urgent -= 1

    @app.post("/api/emergency/shed")
    async def shed(body: ShedIn, user: dict = Depends(operator)):
        """Shed every flexible resource now; returns the margin and battery hold time. With
        api.shed_cycle_now a cycle runs at once, so the shed setpoints are on the devices when
        this answers (not one cycle period later)."""
        m = await urgently(controller.set_emergency, True, by=user["user"], reason=body.reason)
        if st.shed_cycle_now:  # (a scheduled cycle may have sent it already: then this one writes 0)
            rep = await urgently(controller.cycle)
            m = {**m, "cycle": {k: rep.get(k) for k in ("cycle", "written", "rejected", "total_ms")}}
        await urgently(audit, user, "emergency_shed", "", body.model_dump())
        return m

    @app.post("/api/emergency/restore")
    async def restore(user: dict = Depends(operator)):
        m = await urgently(controller.set_emergency, False, by=user["user"])
        await urgently(audit, user, "emergency_restore")
        return m

    @app.post("/api/devices/{device_id:path}/out_of_service")
    def out_of_service(device_id: str, body: ServiceIn | None = None, user: dict = Depends(operator)):
        """Force a device out of (or back into, with in_service=true) dispatch."""
        if not re.fullmatch(DEVICE_ID.strip("^$"), device_id):
            raise HTTPException(422, "device_id: group/index of safe characters, at most 64 each")
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
        try:
            controller.operator_command(Command(body.device_id, body.setpoint, body.value,
                                                "operator", user["user"]))
        except KeyError as e:
            raise HTTPException(404, str(e)) from None
        audit(user, "command", body.device_id, body.model_dump())
        return {"queued": True}

    return app
