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


def layout(refresh_ms: int = 1000) -> html.Div:
    return html.Div([
        dcc.Interval(id="live-interval", interval=refresh_ms, n_intervals=0),
        dcc.Store(id="live-pending"),
        dcc.Store(id="live-role"),
        dcc.ConfirmDialog(id="live-confirm"),
        html.Div([html.Div(id="live-status", style={"display": "inline"}),
                  html.A("log out", href="/logout", id="live-logout")],
                 style={"fontFamily": "monospace", "fontSize": "12px", "margin": "4px 0"}),
        html.Div(id="live-margin", style={"fontSize": "13px", "margin": "4px 0"}),
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
                 dash_table.DataTable(id="live-dr-table", columns=_cols(DR_COLS), page_size=8,
                                      style_data_conditional=ACTION_CELL + UNDER_CELL, **TABLE_STYLE)),
        ], style=ROW),
        html.Div([
            _col(html.H3("Alarms", style={"margin": "2px"}), html.Div(id="live-alarms-msg"),
                 dash_table.DataTable(id="live-alarms", columns=_cols(ALARM_COLS), page_size=8,
                                      style_data_conditional=ACTION_CELL, **TABLE_STYLE)),
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
            dash_table.DataTable(id="live-devices", columns=_cols(DEVICE_COLS),
                                 page_current=0, page_size=PAGE_SIZE, page_action="custom", page_count=1,
                                 style_data_conditional=ACTION_CELL, **TABLE_STYLE),
        ], style=PANEL),
        html.Div(id="live-audit-panel", children=[
            html.H3("Audit trail", style={"margin": "2px"}), html.Div(id="live-audit-msg"),
            dash_table.DataTable(id="live-audit", columns=_cols(["t", "who", "role", "action", "target", "detail", "ok"]),
                                 page_size=10, **TABLE_STYLE),
        ], style=PANEL),
    ])


DR_COLS = ["id", "status", "note", "start", "end", "requested_kw", "delivered_kw", "delivery_pct", "groups",
           "source"]
ALARM_COLS = ["id", "t", "kind", "device_id", "message", "active", "acknowledged", "ack_by"]
DEVICE_COLS = ["device_id", "kind", "available", "in_service", "quality", "reason", "p_kw"]
ACTION_CELL = [{"if": {"column_id": "action"}, "color": "#0645ad", "textDecoration": "underline",
                "cursor": "pointer", "fontWeight": "bold"}]
UNDER_CELL = [{"if": {"filter_query": '{note} contains "UNDER"', "column_id": "note"}, "color": "#b00",
               "fontWeight": "bold"}]


def with_action(cols: list[str], role: str) -> list[dict]:
    """Table columns; operators get an 'action' column whose cell is the row's action link."""
    return _cols((["action"] if role in WRITE_ROLES else []) + cols)


def _msg(reply: Reply, what: str):
    if reply.ok:
        return ""
    return html.Span(f"{what}: {reply.error}", style={"color": "#b00", "fontSize": "12px"})


class LiveSnapshot:
    """One refresh: the aggregated endpoints this user may read, fetched concurrently with the
    user's own client, then turned into panels. Shared by all sessions (feeder-head history,
    schedule cache); viewers never fetch the operator-only audit trail."""

    NAMES = ("fleet", "grid", "head", "dr_events", "dr_performance", "alarms", "gate", "audit")
    OPERATOR_ONLY = ("audit",)

    def __init__(self, history: ld.HeadHistory, pool: ThreadPoolExecutor):
        self.history, self.pool = history, pool
        self.head_missing = False
        self.sched: tuple[list, list] = ([], [])
        self._next_sched = 0.0
        self.last_fleet: dict = {}

    SCHEDULE_EVERY_S = 30.0  # the schedule is per device x step: fetched rarely, summed once

    def fetch(self, client: ApiClient, role: str = "viewer") -> dict[str, Reply]:
        names = [n for n in self.NAMES if role in WRITE_ROLES or n not in self.OPERATOR_ONLY]
        if self.head_missing:
            names.remove("head")
        futs = {n: self.pool.submit(getattr(client, n)) for n in names}
        sched = None
        if self.head_missing and time.monotonic() >= self._next_sched:
            self._next_sched = time.monotonic() + self.SCHEDULE_EVERY_S
            sched = self.pool.submit(client.schedule)
        out = {n: f.result() for n, f in futs.items()}
        if sched is not None:
            rs = sched.result()
            self.sched = ld.schedule_series(rs.data) if rs.ok else ([], [])
        out.setdefault("head", Reply(False, error="this controller does not offer it", status=404))
        if out["head"].missing:
            self.head_missing = True
        if out["fleet"].ok and isinstance(out["fleet"].data, dict):
            self.last_fleet = out["fleet"].data
        return out

    def head_panel(self, head: Reply, fleet: Reply, windows) -> dict:
        if head.ok:
            s = ld.head_series(head.data, self.history)
            kind = head.data.get("schedule_kind") if isinstance(head.data, dict) else None
            if s["t"] and s.get("schedule_t"):
                s.update(zip(("schedule_t", "schedule_p_kw"),
                             ld.window(s["schedule_t"], s["schedule_p_kw"], s["t"][0] - 900.0, s["t"][-1] + 3600.0)))
            sched_name = {"head": "head P schedule (kW)", "battery_total": "battery schedule (kW)"}.get(kind, "P schedule (kW)")
            return ld.head_figure(s, p_name="head P metered (kW)", sched_name=sched_name, windows=windows)
        if not head.missing or not fleet.ok:
            return ld.message_figure("feeder head: " + (head.error if not head.missing else fleet.error), 380)
        # no feeder-head endpoint: the controller's own view, fleet net P against its schedule
        t, p = ld.fleet_net(fleet.data)
        self.history.add(t, p)
        s = {"t": list(self.history.t), "p_kw": list(self.history.p), "q_kvar": [None] * len(self.history.t),
             "schedule_t": self.sched[0], "schedule_p_kw": self.sched[1]}
        if s["t"] and self.sched[0]:
            s["schedule_t"], s["schedule_p_kw"] = ld.window(*self.sched, s["t"][0] - 900.0, s["t"][-1] + 3600.0)
        fig = ld.head_figure(s, p_name="fleet net P (kW)", sched_name="battery schedule (kW)", windows=windows)
        if s["t"]:
            fig["layout"]["title"]["text"] = "fleet net P vs battery schedule (this controller has no feeder-head meter)"
        return fig

    def render(self, r: dict[str, Reply], sess) -> tuple:
        grid = r["grid"]
        if grid.ok and isinstance(grid.data, dict) and grid.data.get("buses"):
            lim = grid.data.get("v_limits_pu") or [grid.data.get("v_min_pu", 0.95), grid.data.get("v_max_pu", 1.05)]
            oneline = one_line_figure(grid.data, float(lim[0]), float(lim[1]))
        else:
            oneline = ld.message_figure("feeder one-line: " + (grid.error or "no buses in reply"), 380)
        dr = ld.dr_rows(r["dr_events"].data) if r["dr_events"].ok else []
        windows = [(e["id"], e["start_t"], e["end_t"]) for e in dr if e["status"] in ("active", "pending", "completed")]
        headfig = self.head_panel(r["head"], r["fleet"], windows)
        fleet_rows = ld.fleet_rows(r["fleet"].data) if r["fleet"].ok else []
        fleetfig = ld.fleet_figure(fleet_rows) if r["fleet"].ok else ld.message_figure("fleet: " + r["fleet"].error)
        fleet_cols = _cols(["group", "kind"] + [f for f in ld.AGG_FIELDS if any(f in row for row in fleet_rows)])
        drfig = ld.dr_figure(dr) if r["dr_events"].ok else ld.message_figure("DR events: " + r["dr_events"].error, 300)
        perf = r["dr_performance"]
        trend = ld.dr_trend_figure(perf.data, dr) if perf.ok else ld.message_figure(
            "DR delivery per cycle: " + perf.error, 300)
        alarms = ld.alarm_rows(r["alarms"].data) if r["alarms"].ok else []
        gate = ld.gate_rows(r["gate"].data) if r["gate"].ok else []
        write = sess.role in WRITE_ROLES
        if write:
            for e in dr:
                e["action"] = "cancel" if e["status"] in ("pending", "active") else ""
            for a in alarms:
                a["action"] = "acknowledge" if a["acknowledged"] == "no" else ""
        audit = ld.audit_rows(r["audit"].data) if "audit" in r and r["audit"].ok else []
        audit_msg = _msg(r["audit"], "audit trail") if "audit" in r else ""
        t = None
        for n in ("fleet", "grid"):
            if r[n].ok and isinstance(r[n].data, dict) and r[n].data.get("t") is not None:
                t = r[n].data["t"]
                break
        fl = r["fleet"].data if r["fleet"].ok and isinstance(r["fleet"].data, dict) else {}
        return (self.status_bar(r, t, sess), margin_line(fl), oneline, headfig, fleetfig, fleet_rows, fleet_cols,
                drfig, dr, with_action(DR_COLS, sess.role), trend,
                alarms, with_action(ALARM_COLS, sess.role), _msg(r["alarms"], "alarms"), gate,
                _msg(r["gate"], "safety gate"), audit, audit_msg,
                {"display": "block" if write else "none", **PANEL})

    def status_bar(self, r: dict[str, Reply], t, sess) -> list:
        up = sum(x.ok for x in r.values())
        missing = sum(x.missing for x in r.values())
        fl = r["fleet"].data if r["fleet"].ok and isinstance(r["fleet"].data, dict) else {}
        clock = fl.get("clock") or "controller clock"
        text = (f"signed in as {sess.user} (role {sess.role}) · API {sess.client.base_url} · "
                f"controller time {ld.utc(t) or 'n/a'} UTC ({clock}; not this computer's clock) · "
                f"{up}/{len(r) - missing} endpoints ok"
                + (f" ({missing} not offered by this controller)" if missing else "")
                + f" · slowest fetch {max(x.ms for x in r.values()):.0f} ms · ")
        if up == 0:
            text = f"{r['fleet'].error} · " + text
        out = [html.Span(text)]
        em = fl.get("emergency")
        if em:
            out.append(html.Div(emergency_text(em, fl.get("margin")), id="live-emergency",
                                style={"background": "#c00", "color": "white", "padding": "4px",
                                       "fontWeight": "bold"}))
        return out


def emergency_text(em: dict, margin: dict | None) -> str:
    """The banner while an emergency shed is active: who, since when, and its plan."""
    plan = []
    if em.get("shed_kw") is not None:
        plan.append(f"plan sheds {em['shed_kw']:.1f} kW")
    m = margin if isinstance(margin, dict) else {}
    if m.get("margin_kw") is not None:
        plan.append(f"margin {m['margin_kw']:.1f} kW")
    if em.get("hold_s") is not None:
        plan.append(f"hold {em['hold_s'] / 60:.0f} min")
    if em.get("response_s") is not None:
        plan.append(f"response {em['response_s']:.0f} s")
    return (f"EMERGENCY SHED active since {ld.utc(em.get('since'))} UTC by {em.get('by', '?')}"
            f" ({em.get('reason', '')})" + (": " + ", ".join(plan) if plan else "")
            + ". Restore it from the operator actions.")


def margin_line(fl: dict):
    m = fl.get("margin") if isinstance(fl.get("margin"), dict) else None
    if not m:
        return ""
    return html.Span([html.B("Available reduction margin now: "),
                      (f"{m.get('margin_kw', 0):.1f} kW (batteries {m.get('battery_kw', 0):.1f} kW for "
                       f"{m.get('battery_hold_s', 0) / 60:.0f} min). A DR request above it will under-deliver.")],
                     id="live-margin-text")


def actions_panel(role: str):
    """Action controls for operator/admin; a viewer gets a notice and no buttons at all."""
    if role not in WRITE_ROLES:
        return html.Div(f"read-only view (role {role}): operator actions need an operator sign-in",
                        id="live-readonly", style={"color": "#666"})
    inp = {"style": {"width": "90px", "marginRight": "8px"}}
    return html.Div([
        html.B("Operator actions (each asks for confirmation, all are audited under your user). "
               "Cancel an event, acknowledge an alarm or take a device out of service with the "
               "'action' link on its row."),
        html.Div([
            html.Span("DR event: start in (min) "), dcc.Input(id="act-dr-start-min", type="number", value=1, min=0, **inp),
            html.Span("duration (min) "), dcc.Input(id="act-dr-duration-min", type="number", value=15, min=1, **inp),
            html.Span("reduction (kW) "), dcc.Input(id="act-dr-kw", type="number", value=50, min=0, **inp),
            html.Span("groups "), dcc.Input(id="act-dr-groups", type="text", placeholder="all",
                                           style={"width": "140px", "marginRight": "8px"}),
            html.Button("Create DR event", id="act-dr-create"),
        ], style={"margin": "4px 0"}),
        html.Div([
            html.Button("EMERGENCY SHED", id="act-shed",
                        style={"background": "#c00", "color": "white", "fontWeight": "bold"}),
            html.Button("Restore from emergency", id="act-restore", style={"marginLeft": "12px"}),
        ], style={"margin": "4px 0"}),
    ])


def describe_action(trigger: str, v: dict, fleet: dict | None = None) -> tuple[dict | None, str]:
    """(pending action, confirmation text) for the button or row link pressed; (None, error)
    when the form is incomplete or there is nothing to do."""
    fleet = fleet or {}
    if trigger == "act-dr-create":
        if v["kw"] is None or v["kw"] <= 0 or not v["dur"] or v["start"] is None:
            return None, "DR event: give a start, a duration and a positive reduction in kW"
        groups = [g.strip() for g in (v["groups"] or "").split(",") if g.strip()]
        text = (f"Create a DR event of {v['kw']} kW starting in {v['start']} min for {v['dur']} min "
                f"on {', '.join(groups) or 'all groups'}?")
        m = fleet.get("margin") if isinstance(fleet.get("margin"), dict) else {}
        if m.get("margin_kw") is not None and float(v["kw"]) > float(m["margin_kw"]):
            share = 100.0 * float(m["margin_kw"]) / float(v["kw"])
            text = (f"WARNING: {v['kw']} kW is more than the available reduction margin of "
                    f"{m['margin_kw']:.1f} kW: expect about {share:.0f} % delivery.\n\n" + text)
        return ({"kind": "dr_create", "start_min": float(v["start"]), "duration_min": float(v["dur"]),
                 "reduction_kw": float(v["kw"]), "groups": groups}, text)
    if trigger == "live-dr-table":
        row = v.get("row") or {}
        if row.get("status") not in ("pending", "active"):
            return None, ""
        return ({"kind": "dr_cancel", "id": row["id"]},
                (f"Cancel DR event {row['id']} ({row['status']}, {row.get('requested_kw')} kW, "
                 f"{row.get('start')} to {row.get('end')} UTC)?"))
    if trigger == "live-alarms":
        row = v.get("row") or {}
        if not row.get("id") or row.get("acknowledged") == "yes":
            return None, ""
        return ({"kind": "alarm_ack", "id": row["id"]},
                f"Acknowledge alarm {row['id']} ({row.get('kind')} {row.get('device_id')}: {row.get('message')})?")
    if trigger == "live-devices":
        row = v.get("row") or {}
        if not row.get("device_id"):
            return None, ""
        out = row.get("in_service") != "no"
        return ({"kind": "out_of_service" if out else "in_service", "id": row["device_id"]},
                f"Force device {row['device_id']} out of service (the controller stops dispatching it)?" if out
                else f"Return device {row['device_id']} to service?")
    if trigger == "act-shed":
        return ({"kind": "emergency_shed"},
                "EMERGENCY SHED: discharge batteries, stop EV charging, curtail flexible loads and TCLs now?")
    if trigger == "act-restore":
        em = fleet.get("emergency")
        if not em:
            return None, "restore: no emergency shed is active"
        return ({"kind": "emergency_restore"},
                (f"Restore from the EMERGENCY SHED active since {ld.utc(em.get('since'))} UTC by "
                 f"{em.get('by', '?')}? Batteries, EV charging, flexible loads and TCLs go back to normal dispatch."))
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
    if kind in ("out_of_service", "in_service"):
        return client.set_out_of_service(action["id"], kind == "out_of_service")
    if kind == "emergency_shed":
        return client.emergency_shed("operator via dashboard")
    if kind == "emergency_restore":
        return client.emergency_restore()
    return Reply(False, error=f"unknown action {kind}")


def _row(active_cell, data, page=0, size=None):
    """The row whose 'action' cell was clicked, else None."""
    if not active_cell or active_cell.get("column_id") != "action" or not data:
        return None
    i = active_cell.get("row", -1) + ((page or 0) * size if size else 0)
    if active_cell.get("row_id") is not None:
        return next((r for r in data if r.get("id") == active_cell["row_id"]), None)
    return data[i] if 0 <= i < len(data) else None


def register(app, store) -> None:
    from dash.exceptions import PreventUpdate

    from dashboard.auth import current

    history = ld.HeadHistory()
    pool = ThreadPoolExecutor(max_workers=len(LiveSnapshot.NAMES), thread_name_prefix="dash-api")
    snap = LiveSnapshot(history, pool)

    def session():
        s = current(store)
        if s is None:
            raise PreventUpdate
        return s

    @app.callback(
        Output("live-status", "children"), Output("live-margin", "children"), Output("live-oneline", "figure"),
        Output("live-head", "figure"), Output("live-fleet", "figure"), Output("live-fleet-table", "data"),
        Output("live-fleet-table", "columns"), Output("live-dr", "figure"), Output("live-dr-table", "data"),
        Output("live-dr-table", "columns"), Output("live-dr-trend", "figure"),
        Output("live-alarms", "data"), Output("live-alarms", "columns"), Output("live-alarms-msg", "children"),
        Output("live-gate", "data"), Output("live-gate-msg", "children"),
        Output("live-audit", "data"), Output("live-audit-msg", "children"), Output("live-audit-panel", "style"),
        Input("live-interval", "n_intervals"))
    def refresh(_n):
        sess = session()
        return snap.render(snap.fetch(sess.client, sess.role), sess)

    @app.callback(Output("live-devices", "data"), Output("live-devices", "columns"),
                  Output("live-devices", "page_count"), Output("live-dev-msg", "children"),
                  Input("live-devices", "page_current"), Input("live-devices", "page_size"),
                  Input("live-dev-filter", "value"), Input("live-interval", "n_intervals"))
    def devices(page, size, flt, _n):
        sess = session()
        page, size = page or 0, size or PAGE_SIZE
        r = sess.client.devices(page * size, size, only_unavailable="bad" in (flt or []))
        cols = with_action(DEVICE_COLS, sess.role)
        if not r.ok:
            return [], cols, 1, _msg(r, "devices")
        rows, total = ld.device_rows(r.data)
        if sess.role in WRITE_ROLES:
            for d in rows:
                d["action"] = "take out of service" if d["in_service"] == "yes" else "return to service"
        return rows, cols, max(1, -(-total // size)), f"{total} devices" + (" unavailable/out of service" if flt else "")

    @app.callback(Output("live-actions", "children"), Output("live-role", "data"),
                  Input("live-interval", "n_intervals"), State("live-role", "data"))
    def actions(_n, shown_role):
        # per browser: drawn when the role is first known (or changes), then left alone so
        # refreshes never wipe what the operator is typing
        role = session().role
        if role == shown_role:
            return no_update, no_update
        return actions_panel(role), role

    @app.callback(Output("live-confirm", "displayed"), Output("live-confirm", "message"),
                  Output("live-pending", "data"), Output("live-action-result", "children", allow_duplicate=True),
                  Output("live-dr-table", "active_cell"), Output("live-alarms", "active_cell"),
                  Output("live-devices", "active_cell"),
                  Input("act-dr-create", "n_clicks"), Input("act-shed", "n_clicks"), Input("act-restore", "n_clicks"),
                  Input("live-dr-table", "active_cell"), Input("live-alarms", "active_cell"),
                  Input("live-devices", "active_cell"),
                  State("act-dr-start-min", "value"), State("act-dr-duration-min", "value"),
                  State("act-dr-kw", "value"), State("act-dr-groups", "value"),
                  State("live-dr-table", "derived_viewport_data"), State("live-alarms", "derived_viewport_data"),
                  State("live-devices", "data"),
                  prevent_initial_call=True)
    def ask(_a, _b, _c, dr_cell, alarm_cell, dev_cell, start, dur, kw, groups, dr_data, alarm_data, dev_data):
        sess = session()
        trig = ctx.triggered_id
        if not trig or not (ctx.triggered and ctx.triggered[0].get("value")) or sess.role not in WRITE_ROLES:
            return (no_update,) * 7
        row = {"live-dr-table": lambda: _row(dr_cell, dr_data), "live-alarms": lambda: _row(alarm_cell, alarm_data),
               "live-devices": lambda: _row(dev_cell, dev_data)}.get(trig, lambda: None)()
        action, text = describe_action(trig, {"start": start, "dur": dur, "kw": kw, "groups": groups, "row": row},
                                       snap.last_fleet)
        clear = (None, None, None)
        if action is None:
            return (False, "", None, html.Span(text, style={"color": "#b00"}) if text else no_update, *clear)
        return (True, text, action, "", *clear)

    @app.callback(Output("live-action-result", "children", allow_duplicate=True),
                  Input("live-confirm", "submit_n_clicks"), State("live-pending", "data"),
                  prevent_initial_call=True)
    def confirmed(_n, action):
        sess = session()
        if not action:
            return no_update
        t = snap.last_fleet.get("t")
        r = perform(sess.client, action, float(t) if t is not None else None)
        if r.ok:
            what = r.data.get("id") if isinstance(r.data, dict) else ""
            return html.Span(f"done: {action['kind']} {what or action.get('id') or ''}".strip(),
                             style={"color": "#070"}, id="live-action-ok")
        return html.Span(f"refused: {r.error}", style={"color": "#b00"}, id="live-action-err")
