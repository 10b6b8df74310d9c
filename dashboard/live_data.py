"""Turn controller API replies into figures and table rows for the live view.

Pure functions of JSON (no HTTP, no Dash state) so they are testable and benchmarkable
alone. They accept the few shapes the API may use for a payload (a bare list or
{"items": [...]}) and never fail on a missing field: a panel shows what it can.
"""

from __future__ import annotations

import math
from collections import deque
from datetime import UTC, datetime

from dashboard.figures import base_layout, message_figure

TELEMETRY_KINDS = ("meter", "rtu")
AGG_FIELDS = ["p_kw", "q_kvar", "soc_pct", "soc_kwh", "t_in_c", "comfort_pct", "usable", "count"]


def items(data) -> list:
    """A list payload, whether bare or wrapped as {"items"|"events"|"alarms"|...: [...]}."""
    if isinstance(data, list):
        return data
    if isinstance(data, dict):
        for k in ("items", "events", "alarms", "devices", "entries", "audit", "rows", "decisions"):
            if isinstance(data.get(k), list):
                return data[k]
    return []


def utc(t) -> str:
    if t is None:
        return ""
    if isinstance(t, str):
        return t
    try:
        return datetime.fromtimestamp(float(t), UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, ValueError, OSError):
        return str(t)


def num(x, nd: int = 2):
    try:
        f = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else round(f, nd)


# -- fleet ---------------------------------------------------------------------------------
def fleet_groups(data) -> dict[str, dict]:
    if isinstance(data, dict):
        g = data.get("groups", data.get("fleet"))
        if isinstance(g, dict):
            return {k: v for k, v in g.items() if isinstance(v, dict)}
        if isinstance(g, list):
            return {str(x.get("group", x.get("name", i))): x for i, x in enumerate(g)}
        return {k: v for k, v in data.items() if isinstance(v, dict) and "kind" in v}
    if isinstance(data, list):
        return {str(x.get("group", x.get("name", i))): x for i, x in enumerate(data)}
    return {}


def fleet_rows(data) -> list[dict]:
    rows = []
    for name, g in sorted(fleet_groups(data).items()):
        if g.get("telemetry_only") or g.get("kind") in TELEMETRY_KINDS:
            continue  # the head meter and the RTU measure the feeder; they are not fleet classes
        row = {"group": name, "kind": g.get("kind", "")}
        for f in AGG_FIELDS:
            if f in g:
                row[f] = num(g[f])
        rows.append(row)
    return rows


def fleet_figure(rows: list[dict]) -> dict:
    """Power per group (kW, load +) and, where reported, battery SOC, TCL comfort, usable share."""
    if not rows:
        return message_figure("no fleet data")
    names = [f"{r['group']} ({r['kind']})" for r in rows]
    p = [r.get("p_kw") or 0.0 for r in rows]
    data = [{"type": "bar", "x": names, "y": p, "name": "P (kW)", "xaxis": "x", "yaxis": "y",
                 "marker": {"color": ["#1f77b4" if x >= 0 else "#2ca02c" for x in p]},
                 "text": [f"{x:.1f}" for x in p], "textposition": "outside"}]
    pct = [(f"{r['group']} SOC", r["soc_pct"]) for r in rows if r.get("soc_pct") is not None]
    pct += [(f"{r['group']} comfort", r["comfort_pct"]) for r in rows if r.get("comfort_pct") is not None]
    pct += [(f"{r['group']} usable", round(100.0 * r["usable"] / r["count"], 1)) for r in rows
            if r.get("usable") is not None and r.get("count")]
    if pct:
        data.append({"type": "bar", "x": [q[0] for q in pct], "y": [q[1] for q in pct], "name": "%",
                         "xaxis": "x2", "yaxis": "y2", "marker": {"color": "#9467bd"},
                         "text": [f"{q[1]:.0f}" for q in pct], "textposition": "outside"})
    return {"data": data, "layout": base_layout(
        300, showlegend=False, margin={"t": 40, "l": 50, "r": 10, "b": 70}, uirevision="fleet",
        xaxis={"domain": [0, 0.6]}, yaxis={"title": {"text": "P by group (kW, load +)"}},
        xaxis2={"domain": [0.68, 1.0], "anchor": "y2"},
        yaxis2={"anchor": "x2", "range": [0, 115], "title": {"text": "SOC / comfort / usable (%)"}})}


# -- feeder head ---------------------------------------------------------------------------
class HeadHistory:
    """Feeder-head P/Q samples for the chart, kept on the dashboard server when the API only
    reports the latest value (bounded ring buffer, de-duplicated on the controller's time)."""

    def __init__(self, maxlen: int = 3600):
        self.t: deque = deque(maxlen=maxlen)
        self.p: deque = deque(maxlen=maxlen)
        self.q: deque = deque(maxlen=maxlen)
        self.sched: deque = deque(maxlen=maxlen)

    def add(self, t, p_kw, q_kvar=None, sched_kw=None) -> None:
        if t is None or p_kw is None or (self.t and t <= self.t[-1]):
            return
        self.t.append(t)
        self.p.append(p_kw)
        self.q.append(q_kvar)
        self.sched.append(sched_kw)


def head_series(data, history: HeadHistory) -> dict[str, list]:
    """{t, p_kw, q_kvar, schedule_p_kw} lists from a series payload, else from `history`."""
    if isinstance(data, dict) and isinstance(data.get("t"), list):
        n = len(data["t"])
        return {"t": data["t"], "p_kw": data.get("p_kw") or [None] * n,
                "q_kvar": data.get("q_kvar") or [None] * n,
                "schedule_p_kw": data.get("schedule_p_kw") or [None] * n,
                "schedule_t": data.get("schedule_t")}
    rows = items(data)
    if rows:
        return {"t": [r.get("t") for r in rows], "p_kw": [r.get("p_kw") for r in rows],
                "q_kvar": [r.get("q_kvar") for r in rows],
                "schedule_p_kw": [r.get("schedule_p_kw") for r in rows], "schedule_t": None}
    if isinstance(data, dict) and "p_kw" in data:
        history.add(data.get("t"), data.get("p_kw"), data.get("q_kvar"), data.get("schedule_p_kw"))
    return {"t": list(history.t), "p_kw": list(history.p), "q_kvar": list(history.q),
            "schedule_p_kw": list(history.sched), "schedule_t": None}


def window(t: list, y: list, lo: float, hi: float) -> tuple[list, list]:
    """Only the schedule steps around what is on screen."""
    keep = [i for i, x in enumerate(t) if lo <= x <= hi]
    return [t[i] for i in keep], [y[i] for i in keep]


def head_figure(s: dict, p_name: str = "P measured (kW)", sched_name: str = "P schedule (kW)",
                windows: list[tuple] | None = None) -> dict:
    if not s["t"]:
        return message_figure("no feeder-head data yet", 380)
    x = [utc(t) for t in s["t"]]
    data = [{"type": "scatter", "x": x, "y": s["p_kw"], "mode": "lines+markers", "name": p_name, "marker": {"size": 4}}]
    if any(v is not None for v in s["q_kvar"]):
        data.append({"type": "scatter", "x": x, "y": s["q_kvar"], "mode": "lines", "name": "Q measured (kvar)"})
    if s.get("schedule_t"):
        data.append({"type": "scatter", "x": [utc(t) for t in s["schedule_t"]], "y": s["schedule_p_kw"],
                         "mode": "lines", "line": {"dash": "dash", "shape": "hv"}, "name": sched_name})
    elif any(v is not None for v in s["schedule_p_kw"]):
        data.append({"type": "scatter", "x": x, "y": s["schedule_p_kw"], "mode": "lines",
                         "line": {"dash": "dash", "shape": "hv"}, "name": sched_name})
    lay = base_layout(380, "feeder head P/Q vs schedule", legend={"orientation": "h", "y": -0.25},
                      margin={"t": 30, "l": 50, "r": 10, "b": 70}, xaxis={"title": {"text": "controller time (UTC)"}},
                      yaxis={"title": {"text": "kW / kvar"}}, uirevision="head")
    lo, hi = s["t"][0], s["t"][-1]
    shapes, ann = [], []
    for eid, a, b in windows or []:  # DR event windows on screen, shaded and named
        if a is None or b is None or b < lo or a > hi + 3600:
            continue
        shapes.append({"type": "rect", "xref": "x", "yref": "paper", "x0": utc(max(a, lo)), "x1": utc(b),
                       "y0": 0, "y1": 1, "fillcolor": "rgba(23,190,207,0.15)", "line": {"width": 0}, "layer": "below"})
        ann.append({"x": utc(max(a, lo)), "xanchor": "left", "y": 1, "yref": "paper", "yanchor": "top",
                    "text": f"DR {eid}", "showarrow": False, "font": {"size": 10, "color": "#0a8a99"}})
    lay["shapes"], lay["annotations"] = shapes, ann
    return {"data": data, "layout": lay}


# -- demand response -----------------------------------------------------------------------
UNDER_DELIVERY_PCT = 90.0  # an active/completed event below this share of its request is flagged

def dr_rows(data, now_t: float | None = None) -> list[dict]:
    rows = []
    for e in items(data):
        req = num(e.get("requested_kw", e.get("reduction_kw")), 3)
        perf = e.get("performance") if isinstance(e.get("performance"), dict) else {}
        dlv = num(e.get("delivered_kw", perf.get("delivered_kw")), 3)
        pct = num(e.get("delivery_pct", perf.get("delivery_pct")), 1)
        if pct is None and req and dlv is not None:
            pct = round(100.0 * dlv / req, 1)
        start = e.get("start_t", e.get("start"))
        end = e.get("end_t", e.get("end"))
        if end is None and start is not None and e.get("duration_s") is not None:
            end = float(start) + float(e["duration_s"])
        status = e.get("status", "")
        note = ""
        if status == "pending":  # nothing to deliver yet: not "0 %"
            dlv, pct, note = "pending", "pending", f"starts {utc(start)[11:16]} UTC"
        elif status in ("active", "completed") and isinstance(pct, (int, float)) and pct < UNDER_DELIVERY_PCT:
            note = f"UNDER-DELIVERING: {pct:.0f} % of the request"
        rows.append({"id": str(e.get("id", e.get("event_id", ""))), "status": status,
                     "start": utc(start), "end": utc(end), "opt": e.get("opt", ""), "note": note,
                     "start_t": start, "end_t": end,
                     "requested_kw": req, "delivered_kw": dlv, "delivery_pct": pct,
                     "groups": ",".join(e.get("groups") or []) or "all",
                     "source": e.get("source", ""), "created_by": e.get("created_by", "")})
    order = {"active": 0, "pending": 1, "completed": 2, "cancelled": 3}
    rows.sort(key=lambda r: (order.get(r["status"], 4), r["start"]))
    return rows


def dr_figure(rows: list[dict]) -> dict:
    shown = [r for r in rows if r["status"] in ("active", "pending", "completed")][:12]
    if not shown:
        return message_figure("no DR events", height=300)
    x = [f"{r['id']} ({r['status']})" for r in shown]
    data = [{"type": "bar", "x": x, "y": [r["requested_kw"] or 0 for r in shown], "name": "requested (kW)",
                 "marker": {"color": "#7f7f7f"}},
            {"type": "bar", "x": x, "y": [r["delivered_kw"] if isinstance(r["delivered_kw"], (int, float)) else 0
                                          for r in shown], "name": "delivered (kW)",
                 "marker": {"color": ["#d62728" if r["note"].startswith("UNDER") else "#17becf" for r in shown]},
                 "textposition": "outside", "text": [_pct_text(r) for r in shown]}]
    return {"data": data, "layout": base_layout(
        300, "DR events: requested vs delivered", barmode="group", margin={"t": 30, "l": 50, "r": 10, "b": 70},
        legend={"orientation": "h", "x": 1.0, "xanchor": "right", "y": 1.0, "yanchor": "bottom"},
        yaxis={"title": {"text": "kW"}}, uirevision="dr")}


def _pct_text(r: dict) -> str:
    if r["status"] == "pending":
        return f"pending, {r['note']}"
    return f"{r['delivery_pct']:.0f} %" if isinstance(r["delivery_pct"], (int, float)) else ""


def dr_trend_figure(perf, events: list[dict]) -> dict:
    """Metered delivery per controller cycle against the request, for pending/active events
    (or the latest completed one when none is running)."""
    live = [r["id"] for r in events if r["status"] in ("active", "pending")]
    if not live:
        live = [r["id"] for r in events if r["status"] == "completed"][-1:]
    by: dict[str, list] = {}
    for row in items(perf):
        if str(row.get("event_id")) in live:
            by.setdefault(str(row["event_id"]), []).append(row)
    if not by:
        return message_figure("no DR delivery metered yet", 300)
    data = []
    for eid, rows in sorted(by.items()):
        x = [utc(r.get("t")) for r in rows]
        data.append({"type": "scatter", "x": x, "y": [num(r.get("delivered_kw"), 3) for r in rows],
                         "mode": "lines+markers", "marker": {"size": 4}, "name": f"{eid} delivered (kW)"})
        data.append({"type": "scatter", "x": x, "y": [num(r.get("requested_kw"), 3) for r in rows],
                         "mode": "lines", "line": {"dash": "dash", "shape": "hv"}, "name": f"{eid} requested (kW)"})
    return {"data": data, "layout": base_layout(
        300, "DR delivery per cycle", legend={"orientation": "h", "y": -0.25}, margin={"t": 30, "l": 50, "r": 10, "b": 70},
        yaxis={"title": {"text": "kW"}, "rangemode": "tozero"}, uirevision="dr-trend")}


# -- gate, alarms, devices, audit ----------------------------------------------------------
def gate_rows(data, limit: int = 50) -> list[dict]:
    rows = []
    for d in items(data):
        if d.get("verdict", "curtailed") == "accepted":
            continue
        rows.append({"t": utc(d.get("t")), "device_id": d.get("device_id", ""),
                     "setpoint": d.get("setpoint", ""), "verdict": d.get("verdict", ""),
                     "requested": num(d.get("requested", d.get("value"))),
                     "sent": num(d.get("sent", d.get("sent_value"))),
                     "reasons": _join(d.get("reasons")), "source": d.get("source", "")})
    return rows[-limit:][::-1]


def alarm_rows(data) -> list[dict]:
    rows = []
    for a in items(data):
        rows.append({"id": str(a.get("id", "")), "t": utc(a.get("t")),
                     "severity": a.get("severity", a.get("level", "")),
                     "kind": a.get("kind", a.get("code", "")), "device_id": a.get("device_id") or "",
                     "message": a.get("message", a.get("text", "")),
                     "active": "no" if a.get("active") in (0, False) else "yes",
                     "acknowledged": "yes" if (a.get("acknowledged") or a.get("acked_by")) else "no",
                     "ack_by": a.get("acked_by", a.get("acknowledged_by")) or ""})
    rows.sort(key=lambda r: r["t"], reverse=True)
    rows.sort(key=lambda r: r["acknowledged"] == "yes")  # stable: unacknowledged first, newest first
    return rows


QUALITY_ORDER = ["good", "stale", "invalid", "missing"]


def device_rows(data) -> tuple[list[dict], int]:
    """Device table rows with the reason a device is not usable spelled out."""
    rows = []
    for d in items(data):
        vals = d.get("values") if isinstance(d.get("values"), dict) else {}
        quals = {k: v.get("quality", "") for k, v in vals.items() if isinstance(v, dict)}
        worst = max(quals.values(), key=lambda q: QUALITY_ORDER.index(q) if q in QUALITY_ORDER else -1,
                    default=d.get("quality", ""))
        avail, in_service = d.get("available"), d.get("in_service", True) is not False
        why = d.get("reason") or ""
        if not why:
            parts = []
            if avail is False:
                parts.append("offline: not answering")
            if not in_service:
                parts.append("out of service (operator)")
            bad = sorted(k for k, q in quals.items() if q not in ("good", ""))
            if bad:
                parts.append(f"{worst}: {', '.join(bad[:4])}")
            why = "; ".join(parts)
        p = vals.get("p_kw", {}).get("value") if isinstance(vals.get("p_kw"), dict) else d.get("p_kw")
        rows.append({"device_id": d.get("device_id", d.get("id", "")), "group": d.get("group", ""),
                     "kind": d.get("kind", ""), "bus": d.get("bus"),
                     "available": "yes" if avail else ("no" if avail is not None else ""),
                     "in_service": "yes" if in_service else "no", "quality": worst, "reason": why,
                     "last_ok": utc(d.get("last_ok_t")), "p_kw": num(p)})
    total = data.get("total", len(rows)) if isinstance(data, dict) else len(rows)
    return rows, int(total)


def fleet_net(data) -> tuple[float | None, float | None]:
    """(controller time, net P of all groups in kW) from the fleet payload."""
    groups = fleet_groups(data)
    t = data.get("t") if isinstance(data, dict) else None
    if not groups:
        return t, None
    return t, round(sum(float(g.get("p_kw") or 0.0) for g in groups.values()), 3)


def schedule_series(data) -> tuple[list[float], list[float]]:
    """Summed scheduled battery power per step (kW, load +) from the API's schedule payload."""
    if not isinstance(data, dict):
        return [], []
    t0, step = data.get("t0"), data.get("step_s")
    total = None
    for per in (data.get("data") or {}).get("setpoints", {}).values():
        if per.get("setpoint") != "p_set_kw":
            continue
        vals = per.get("values") or []
        col = [sum(x for x in step_vals if x is not None) for step_vals in zip(*vals)] if vals else []
        total = col if total is None else [a + b for a, b in zip(total, col)]
    if not total or t0 is None or not step:
        return [], []
    return [t0 + k * step for k in range(len(total))], [round(x, 3) for x in total]


def audit_rows(data, limit: int = 30) -> list[dict]:
    rows = [{"t": utc(a.get("t", a.get("time"))), "who": a.get("user", a.get("actor", a.get("who", ""))),
             "role": a.get("role", ""), "action": a.get("action", a.get("method", "")),
             "target": a.get("target", "") or "",
             "detail": audit_detail(a.get("data", a.get("detail", "")))[:200],
             "ok": "" if a.get("ok") is None else ("yes" if a.get("ok") else "refused")}
            for a in items(data)]
    return rows[-limit:][::-1]


def audit_detail(d) -> str:
    """'reduction_kw=6.5, start=2026-01-15 16:08:00 UTC' instead of raw JSON with epoch seconds."""
    if isinstance(d, str):
        try:
            import json

            d = json.loads(d)
        except ValueError:
            return d
    if not isinstance(d, dict):
        return "" if d is None else str(d)
    parts = []
    for k, v in d.items():
        if v is None:
            continue
        if isinstance(v, (int, float)) and not isinstance(v, bool) and (k.endswith("_t") or k in ("t", "since")) \
                and v > 1e8:
            v = utc(v) + " UTC"
            k = k.removesuffix("_t")
        elif isinstance(v, list):
            v = ",".join(map(str, v))
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def _join(x) -> str:
    if isinstance(x, (list, tuple)):
        return ", ".join(map(str, x))
    return str(x or "")
