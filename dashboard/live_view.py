"""Live operator view against the controller API: feeder one-line, head P/Q vs schedule,
fleet aggregates, DR events, safety-gate curtailments, alarms, device availability, audit
trail, and (operator/admin tokens only) confirmed operator actions.

One dcc.Interval drives one callback that fetches the aggregated endpoints and redraws every
panel (no page reloads); the device table pages on the server so 1,000 devices never travel
to the browser at once. API failures are shown in the panel they affect, never raised.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from dash import Input, Output, State, ctx, dash_table, dcc, html, no_update

from dashboard import live_data as ld
from dashboard.api_client import ApiClient, Reply
from dashboard.one_line import one_line_figure

WRITE_ROLES = ("operator", "admin")
PAGE_SIZE = 20
TABLE_STYLE = {"style_cell": {"fontFamily": "monospace", "fontSize": "12px", "textAlign": "left",
                               "maxWidth": "380px", "overflow": "hidden", "textOverflow": "ellipsis"},
                   "style_header": {"fontWeight": "bold"}, "style_table": {"overflowX": "auto"}}
PANEL = {"border": "1px solid #ddd", "borderRadius": "6px", "padding": "8px", "margin": "6px 0"}
ROW = {"display": "flex", "gap": "12px", "flexWrap": "wrap"}


def _col(*children, width="48%"):
    return html.Div(list(children), style={**PANEL, "flex": f"1 1 {width}", "minWidth": "420px"})


GRAPH = {"displayModeBar": False}


def _cols(names):
    return [{"name": n, "id": n} for n in names]


def layout(client: ApiClient, refresh_ms: int = 1000) -> html.Div:
    return html.Div([
        dcc.Interval(id="live-interval", interval=refresh_ms, n_intervals=0),
        dcc.Store(id="live-pending"),
        dcc.Store(id="live-role"),
        dcc.ConfirmDialog(id="live-confirm"),
        html.Div(id="live-status", style={"fontFamily": "monospace", "fontSize": "12px", "margin": "4px 0"}),
        html.Div(id="live-actions", style=PANEL),
        html.Div(id="live-action-result", style={"fontFamily": "monospace", "margin": "4px 0"}),
        html.Div([
            _col(html.H3("Feeder", style={"margin": "2px"}), dcc.Graph(id="live-oneline", config=GRAPH)),
            _col(html.H3("Feeder head", style={"margin": "2px"}), dcc.Graph(id="live-head", config=GRAPH)),
        ], style=ROW),
        html.Div([
            _col(html.H3("Fleet by class", style={"margin": "2px"}), dcc.Graph(id="live-fleet", config=GRAPH),
                 dash_table.DataTable(id="live-fleet-table", **TABLE_STYLE)),
            _col(html.H3("Demand response", style={"margin": "2px"}), dcc.Graph(id="live-dr", config=GRAPH),
                 dcc.Graph(id="live-dr-trend", config=GRAPH),
                 dash_table.DataTable(id="live-dr-table", columns=_cols(
                     ["id", "status", "opt", "start", "end", "requested_kw", "delivered_kw",
                      "delivery_pct", "groups", "source"]), page_size=8, **TABLE_STYLE)),
        ], style=ROW),
        html.Div([
            _col(html.H3("Alarms", style={"margin": "2px"}), html.Div(id="live-alarms-msg"),
                 dash_table.DataTable(id="live-alarms", columns=_cols(
                     ["id", "t", "kind", "device_id", "message", "active", "acknowledged", "ack_by"]),
                     page_size=8, **TABLE_STYLE)),
            _col(html.H3("Safety gate: curtailed / rejected", style={"margin": "2px"}),
                 html.Div(id="live-gate-msg"),
                 dash_table.DataTable(id="live-gate", columns=_cols(
                     ["t", "device_id", "setpoint", "verdict", "requested", "sent", "reasons", "source"]),
                     page_size=8, **TABLE_STYLE)),
        ], style=ROW),
        html.Div([
            html.H3("Device availability", style={"margin": "2px"}),
            dcc.Checklist(id="live-dev-filter", options=[{"label": " only unavailable / out of service",
                                                          "value": "bad"}], value=[]),
            html.Div(id="live-dev-msg"),
            dash_table.DataTable(id="live-devices", columns=_cols(
                ["device_id", "kind", "available", "in_service", "quality", "reason", "p_kw"]),
                page_current=0, page_size=PAGE_SIZE, page_action="custom", page_count=1, **TABLE_STYLE),
        ], style=PANEL),
        html.Div([
            html.H3("Audit trail", style={"margin": "2px"}), html.Div(id="live-audit-msg"),
            dash_table.DataTable(id="live-audit", columns=_cols(["t", "who", "role", "action", "target", "detail", "ok"]),
                                 page_size=10, **TABLE_STYLE),
        ], style=PANEL),
    ])


def _msg(reply: Reply, what: str):
    if reply.ok:
        return ""
    return html.Span(f"{what}: {reply.error}", style={"color": "#b00", "fontSize": "12px"})


class LiveSnapshot:
    """One refresh: all aggregated endpoints fetched concurrently, then turned into panels."""

    NAMES = ("fleet", "grid", "head", "dr_events", "dr_performance", "alarms", "gate", "audit")

    def __init__(self, client: ApiClient, history: ld.HeadHistory, pool: ThreadPoolExecutor):
        self.client, self.history, self.pool = client, history, pool
        self.head_missing = False
        self.sched: tuple[list, list] = ([], [])
        self._next_sched = 0.0

    SCHEDULE_EVERY_S = 30.0  # the schedule is per device x step: fetched rarely, summed once

    def fetch(self) -> dict[str, Reply]:
        names = list(self.NAMES)
        if self.head_missing:
            names.remove("head")
        futs = {n: self.pool.submit(getattr(self.client, n)) for n in names}
        sched = None
        if self.head_missing and time.monotonic() >= self._next_sched:
            self._next_sched = time.monotonic() + self.SCHEDULE_EVERY_S
            sched = self.pool.submit(self.client.schedule)
        out = {n: f.result() for n, f in futs.items()}
        if sched is not None:
            rs = sched.result()
            self.sched = ld.schedule_series(rs.data) if rs.ok else ([], [])
        out.setdefault("head", Reply(False, error="not available from this API", status=404))
        if out["head"].missing:
            self.head_missing = True
        return out

    def head_panel(self, head: Reply, fleet: Reply) -> dict:
        if head.ok:
            s = ld.head_series(head.data, self.history)
            kind = head.data.get("schedule_kind") if isinstance(head.data, dict) else None
            if s["t"] and s.get("schedule_t"):
                s.update(zip(("schedule_t", "schedule_p_kw"),
                             ld.window(s["schedule_t"], s["schedule_p_kw"], s["t"][0] - 900.0, s["t"][-1] + 3600.0)))
            sched_name = {"head": "head P schedule (kW)", "battery_total": "battery schedule (kW)"}.get(kind, "P schedule (kW)")
            return ld.head_figure(s, p_name="head P metered (kW)", sched_name=sched_name)
        if not head.missing or not fleet.ok:
            return ld.message_figure("feeder head: " + (head.error if not head.missing else fleet.error), 380)
        # no feeder-head endpoint: the controller's own view, fleet net P against its schedule
        t, p = ld.fleet_net(fleet.data)
        self.history.add(t, p)
        s = {"t": list(self.history.t), "p_kw": list(self.history.p), "q_kvar": [None] * len(self.history.t),
             "schedule_t": self.sched[0], "schedule_p_kw": self.sched[1]}
        if s["t"] and self.sched[0]:
            s["schedule_t"], s["schedule_p_kw"] = ld.window(*self.sched, s["t"][0] - 900.0, s["t"][-1] + 3600.0)
        fig = ld.head_figure(s, p_name="fleet net P (kW)", sched_name="battery schedule (kW)")
        if s["t"]:
            fig["layout"]["title"]["text"] = "fleet net P vs battery schedule (feeder head not available from this API)"
        return fig

    def render(self, r: dict[str, Reply]) -> tuple:
        grid = r["grid"]
        if grid.ok and isinstance(grid.data, dict) and grid.data.get("buses"):
            lim = grid.data.get("v_limits_pu") or [grid.data.get("v_min_pu", 0.95), grid.data.get("v_max_pu", 1.05)]
            oneline = one_line_figure(grid.data, float(lim[0]), float(lim[1]))
        else:
            oneline = ld.message_figure("feeder one-line: " + (grid.error or "no buses in reply"), 380)
        headfig = self.head_panel(r["head"], r["fleet"])
        fleet_rows = ld.fleet_rows(r["fleet"].data) if r["fleet"].ok else []
        fleetfig = ld.fleet_figure(fleet_rows) if r["fleet"].ok else ld.message_figure("fleet: " + r["fleet"].error)
        fleet_cols = _cols(["group", "kind"] + [f for f in ld.AGG_FIELDS if any(f in row for row in fleet_rows)])
        dr = ld.dr_rows(r["dr_events"].data) if r["dr_events"].ok else []
        drfig = ld.dr_figure(dr) if r["dr_events"].ok else ld.message_figure("DR events: " + r["dr_events"].error, 300)
        perf = r["dr_performance"]
        trend = ld.dr_trend_figure(perf.data, dr) if perf.ok else ld.message_figure(
            "DR delivery per cycle: " + perf.error, 300)
        alarms = ld.alarm_rows(r["alarms"].data) if r["alarms"].ok else []
        gate = ld.gate_rows(r["gate"].data) if r["gate"].ok else []
        audit = ld.audit_rows(r["audit"].data) if r["audit"].ok else []
        t = None
        for n in ("fleet", "grid"):
            if r[n].ok and isinstance(r[n].data, dict) and r[n].data.get("t") is not None:
                t = r[n].data["t"]
                break
        return (self.status_bar(r, t), oneline, headfig, fleetfig, fleet_rows, fleet_cols, drfig, dr, trend,
                alarms, _msg(r["alarms"], "alarms"), gate, _msg(r["gate"], "safety gate"),
                audit, _msg(r["audit"], "audit trail"))


    def status_bar(self, r: dict[str, Reply], t) -> list:
        up = sum(x.ok for x in r.values())
        missing = sum(x.missing for x in r.values())
        text = (f"API {self.client.base_url} · role {self.client.role()} · controller time "
                f"{ld.utc(t) or 'n/a'} UTC · {up}/{len(r) - missing} endpoints ok"
                + (f" ({missing} not offered by this API)" if missing else "")
                + f" · slowest fetch {max(x.ms for x in r.values()):.0f} ms")
        if up == 0:
            text += f" · {r['fleet'].error}"
        out = [html.Span(text)]
        fl = r["fleet"].data if r["fleet"].ok and isinstance(r["fleet"].data, dict) else {}
        m = fl.get("margin") if isinstance(fl.get("margin"), dict) else None
        if m:
            out.append(html.Span(f" · reduction margin {m.get('margin_kw', 0):.1f} kW (batteries "
                                 f"{m.get('battery_kw', 0):.1f} kW for {m.get('battery_hold_s', 0) / 60:.0f} min)"))
        em = fl.get("emergency")
        if em:
            out.append(html.Div(f"EMERGENCY SHED active since {ld.utc(em.get('since'))} UTC by "
                                f"{em.get('by', '?')}: {em.get('reason', '')}", id="live-emergency",
                                style={"background": "#c00", "color": "white", "padding": "4px",
                                       "fontWeight": "bold"}))
        return out


def actions_panel(role: str):
    """Action controls for operator/admin; a viewer gets a notice and no buttons at all."""
    if role not in WRITE_ROLES:
        return html.Div(f"read-only view (token role: {role}); operator actions need an operator token",
                        id="live-readonly", style={"color": "#666"})
    inp = {"style": {"width": "90px", "marginRight": "8px"}}
    return html.Div([
        html.B("Operator actions (each asks for confirmation, all are audited)"),
        html.Div([
            html.Span("DR event: start in (min) "), dcc.Input(id="act-dr-start-min", type="number", value=1, min=0, **inp),
            html.Span("duration (min) "), dcc.Input(id="act-dr-duration-min", type="number", value=15, min=1, **inp),
            html.Span("reduction (kW) "), dcc.Input(id="act-dr-kw", type="number", value=50, min=0, **inp),
            html.Span("groups "), dcc.Input(id="act-dr-groups", type="text", placeholder="all",
                                           style={"width": "140px", "marginRight": "8px"}),
            html.Button("Create DR event", id="act-dr-create"),
        ], style={"margin": "4px 0"}),
        html.Div([
            html.Span("cancel DR event "), dcc.Input(id="act-dr-cancel-id", type="text", placeholder="event id",
                                                    style={"width": "160px", "marginRight": "8px"}),
            html.Button("Cancel DR event", id="act-dr-cancel"),
            html.Span("  acknowledge alarm ", style={"marginLeft": "20px"}),
            dcc.Input(id="act-alarm-id", type="text", placeholder="alarm id", style={"width": "110px", "marginRight": "8px"}),
            html.Button("Acknowledge", id="act-alarm-ack"),
        ], style={"margin": "4px 0"}),
        html.Div([
            html.Span("device "), dcc.Input(id="act-dev-id", type="text", placeholder="group/index",
                                           style={"width": "140px", "marginRight": "8px"}),
            html.Button("Force out of service", id="act-dev-oos"),
            html.Button("EMERGENCY SHED", id="act-shed",
                        style={"marginLeft": "30px", "background": "#c00", "color": "white", "fontWeight": "bold"}),
        ], style={"margin": "4px 0"}),
    ])


def describe_action(trigger: str, v: dict) -> tuple[dict | None, str]:
    """(pending action, confirmation text) for the button pressed; (None, error) when the
    form is incomplete."""
    if trigger == "act-dr-create":
        if v["kw"] is None or v["kw"] <= 0 or not v["dur"] or v["start"] is None:
            return None, "DR event: give a start, a duration and a positive reduction in kW"
        groups = [g.strip() for g in (v["groups"] or "").split(",") if g.strip()]
        return ({"kind": "dr_create", "start_min": float(v["start"]), "duration_min": float(v["dur"]),
                 "reduction_kw": float(v["kw"]), "groups": groups},
                (f"Create a DR event of {v['kw']} kW starting in {v['start']} min for {v['dur']} min "
                 f"on {', '.join(groups) or 'all groups'}?"))
    if trigger == "act-dr-cancel":
        if not v["cancel_id"]:
            return None, "cancel: give the DR event id"
        return {"kind": "dr_cancel", "id": v["cancel_id"].strip()}, f"Cancel DR event {v['cancel_id']}?"
    if trigger == "act-alarm-ack":
        if not v["alarm_id"]:
            return None, "acknowledge: give the alarm id"
        return {"kind": "alarm_ack", "id": v["alarm_id"].strip()}, f"Acknowledge alarm {v['alarm_id']}?"
    if trigger == "act-dev-oos":
        if not v["dev_id"] or "/" not in v["dev_id"]:
            return None, "out of service: give a device id like group/3"
        return ({"kind": "out_of_service", "id": v["dev_id"].strip()},
                f"Force device {v['dev_id']} out of service (the controller stops dispatching it)?")
    if trigger == "act-shed":
        return ({"kind": "emergency_shed"},
                "EMERGENCY SHED: discharge batteries, stop EV charging, curtail flexible loads and TCLs now?")
    return None, ""


def perform(client: ApiClient, action: dict, controller_now_t: float | None = None) -> Reply:
    kind = action["kind"]
    if kind == "dr_create":
        now = controller_now_t if controller_now_t is not None else time.time()
        return client.create_dr_event(now + 60.0 * action["start_min"], 60.0 * action["duration_min"],
                                       action["reduction_kw"], action["groups"] or None)
    if kind == "dr_cancel":
        return client.cancel_dr_event(action["id"])
    if kind == "alarm_ack":
        return client.ack_alarm(action["id"])
    if kind == "out_of_service":
        return client.set_out_of_service(action["id"], True)
    if kind == "emergency_shed":
        return client.emergency_shed("operator via dashboard")
    return Reply(False, error=f"unknown action {kind}")


def register(app, client: ApiClient) -> None:
    history = ld.HeadHistory()
    pool = ThreadPoolExecutor(max_workers=len(LiveSnapshot.NAMES), thread_name_prefix="dash-api")
    snap = LiveSnapshot(client, history, pool)
    last_t: dict[str, float | None] = {"t": None}

    @app.callback(
        Output("live-status", "children"), Output("live-oneline", "figure"), Output("live-head", "figure"),
        Output("live-fleet", "figure"), Output("live-fleet-table", "data"), Output("live-fleet-table", "columns"),
        Output("live-dr", "figure"), Output("live-dr-table", "data"), Output("live-dr-trend", "figure"),
        Output("live-alarms", "data"), Output("live-alarms-msg", "children"),
        Output("live-gate", "data"), Output("live-gate-msg", "children"),
        Output("live-audit", "data"), Output("live-audit-msg", "children"),
        Input("live-interval", "n_intervals"))
    def refresh(_n):
        replies = snap.fetch()
        f = replies["fleet"]
        if f.ok and isinstance(f.data, dict) and f.data.get("t") is not None:
            last_t["t"] = float(f.data["t"])
        return snap.render(replies)

    @app.callback(Output("live-devices", "data"), Output("live-devices", "page_count"),
                  Output("live-dev-msg", "children"),
                  Input("live-devices", "page_current"), Input("live-devices", "page_size"),
                  Input("live-dev-filter", "value"), Input("live-interval", "n_intervals"))
    def devices(page, size, flt, _n):
        page, size = page or 0, size or PAGE_SIZE
        r = client.devices(page * size, size, only_unavailable="bad" in (flt or []))
        if not r.ok:
            return [], 1, _msg(r, "devices")
        rows, total = ld.device_rows(r.data)
        return rows, max(1, -(-total // size)), f"{total} devices" + (" unavailable/out of service" if flt else "")

    @app.callback(Output("live-actions", "children"), Output("live-role", "data"),
                  Input("live-interval", "n_intervals"), State("live-role", "data"))
    def actions(_n, shown_role):
        # per browser: drawn when the role is first known (or changes), then left alone so
        # refreshes never wipe what the operator is typing
        role = client.role()
        if role == shown_role:
            return no_update, no_update
        return actions_panel(role), role

    @app.callback(Output("live-confirm", "displayed"), Output("live-confirm", "message"),
                  Output("live-pending", "data"), Output("live-action-result", "children", allow_duplicate=True),
                  Input("act-dr-create", "n_clicks"), Input("act-dr-cancel", "n_clicks"),
                  Input("act-alarm-ack", "n_clicks"), Input("act-dev-oos", "n_clicks"),
                  Input("act-shed", "n_clicks"),
                  State("act-dr-start-min", "value"), State("act-dr-duration-min", "value"),
                  State("act-dr-kw", "value"), State("act-dr-groups", "value"),
                  State("act-dr-cancel-id", "value"), State("act-alarm-id", "value"),
                  State("act-dev-id", "value"),
                  prevent_initial_call=True)
    def ask(_a, _b, _c, _d, _e, start, dur, kw, groups, cancel_id, alarm_id, dev_id):
        trig = ctx.triggered_id
        if not trig or not (ctx.triggered and ctx.triggered[0].get("value")):
            return no_update, no_update, no_update, no_update
        action, text = describe_action(trig, {"start": start, "dur": dur, "kw": kw, "groups": groups,
                                                  "cancel_id": cancel_id, "alarm_id": alarm_id, "dev_id": dev_id})
        if action is None:
            return False, "", None, html.Span(text, style={"color": "#b00"})
        return True, text, action, ""

    @app.callback(Output("live-action-result", "children", allow_duplicate=True),
                  Input("live-confirm", "submit_n_clicks"), State("live-pending", "data"),
                  prevent_initial_call=True)
    def confirmed(_n, action):
        if not action:
            return no_update
        r = perform(client, action, last_t["t"])
        if r.ok:
            what = r.data.get("id") if isinstance(r.data, dict) else ""
            return html.Span(f"done: {action['kind']} {what or ''}".strip(), style={"color": "#070"},
                             id="live-action-ok")
        return html.Span(f"refused: {r.error}", style={"color": "#b00"}, id="live-action-err")
