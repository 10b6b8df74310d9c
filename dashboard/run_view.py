"""Run viewer: browse finished runs' timeseries, events and KPIs; compare runs on a relative
time axis ("time since start", so runs on different dates line up), with a formatted KPI
table whose delta column reads right, naturally sorted series, and CSV export of both."""

from __future__ import annotations

import math
import re

import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, dash_table, dcc, html

from dashboard.run_data import RunData, flat_kpis

DEFAULT_SERIES = ["head_p_kw", "v_min_pu", "v_max_pu"]


def natural_key(s: str) -> list:
    """'bus2' before 'bus10': digit runs compare as numbers."""
    return [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", s)]


def fmt_num(v, sig: int = 6) -> str:
    """A KPI value as people read it: 4 to 6 significant digits, thousands separators, no float noise."""
    if v is None or isinstance(v, bool) or not isinstance(v, (int, float)):
        return "" if v is None else str(v)
    if isinstance(v, int):
        return f"{v:,}"
    if not math.isfinite(v):
        return str(v)
    if v == 0:
        return "0"
    if abs(v) >= 1e6:
        return f"{v:,.0f}"
    if abs(v) < 1e-3:
        return f"{v:.3e}"
    digits = max(0, sig - 1 - math.floor(math.log10(abs(v))))
    return f"{v:,.{min(digits, 4)}f}".rstrip("0").rstrip(".")


def delta(a, b) -> tuple[str, str]:
    """(B − A, relative change) formatted; differences below float noise read 0."""
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b)):
        return "", ""
    d = b - a
    if abs(d) <= 1e-9 * max(abs(a), abs(b), 1.0):
        return "0", "0 %" if a else ""
    pct = f"{100.0 * d / abs(a):+.1f} %" if a else ""
    return ("+" if d > 0 else "") + fmt_num(d, 4), pct


def layout(runs: list[RunData]) -> html.Div:
    names = [r.name for r in runs]
    cols = sorted(set().union(*[set(r.columns()) for r in runs]), key=natural_key) if runs else []
    return html.Div([
        html.H2("Run viewer"),
        html.Div([
            html.Label("Runs (the first is A, the second B in the delta column)"),
            dcc.Dropdown(id="run-select", options=names, value=names[:2], multi=True),
            html.Label("Series"),
            dcc.Dropdown(id="series-select", options=cols,
                         value=[c for c in DEFAULT_SERIES if c in cols], multi=True),
            dcc.RadioItems(id="run-time-axis", value="relative", inline=True,
                           options=[{"label": " time since start (compare runs on different dates) ", "value": "relative"},
                                    {"label": " absolute time (UTC)", "value": "absolute"}]),
            html.Button("Download selected series (CSV)", id="run-series-csv"),
            dcc.Download(id="run-series-download"),
        ], style={"maxWidth": "900px"}),
        dcc.Graph(id="run-timeseries"),
        html.H3("KPIs"),
        dash_table.DataTable(id="run-kpis", page_size=40, export_format="csv", export_headers="display",
                             sort_action="native", filter_action="native",
                             style_cell={"fontFamily": "monospace", "textAlign": "right", "maxWidth": "260px",
                                         "overflow": "hidden", "textOverflow": "ellipsis"},
                             style_cell_conditional=[{"if": {"column_id": "kpi"}, "textAlign": "left"}],
                             style_table={"overflowX": "auto"}),
        html.H3("Events"),
        dash_table.DataTable(id="run-events", page_size=15, filter_action="native",
                             sort_action="native", style_cell={"fontFamily": "monospace", "textAlign": "left"}),
    ])


def register(app, runs: list[RunData]) -> None:
    by_name = {r.name: r for r in runs}

    @app.callback(Output("run-timeseries", "figure"), Output("run-kpis", "data"),
                  Output("run-kpis", "columns"), Output("run-events", "data"),
                  Output("run-events", "columns"),
                  Input("run-select", "value"), Input("series-select", "value"), Input("run-time-axis", "value"))
    def update(selected, series, axis):
        selected = [by_name[n] for n in (selected or []) if n in by_name]
        return (timeseries_figure(selected, series or [], relative=axis != "absolute"), *kpi_table(selected),
                *event_table(selected))

    @app.callback(Output("run-series-download", "data"), Input("run-series-csv", "n_clicks"),
                  State("run-select", "value"), State("series-select", "value"), prevent_initial_call=True)
    def download(_n, selected, series):
        df = series_frame([by_name[n] for n in (selected or []) if n in by_name], series or [])
        return dcc.send_data_frame(df.to_csv, "gridtwin_series.csv", index=False)


def series_frame(runs: list[RunData], series: list[str]) -> pd.DataFrame:
    """Selected series of the selected runs, long format: run, time (UTC), t_s since start, series, value."""
    parts = []
    for r in runs:
        cols = [c for c in series if c in r.timeseries]
        if not cols:
            continue
        ts = r.timeseries
        t_s = ts["t_s"] if "t_s" in ts else (ts["time"] - ts["time"].iloc[0]).dt.total_seconds()
        wide = pd.DataFrame({"run": r.name, "time_utc": ts["time"].astype(str), "t_s": t_s, **{c: ts[c] for c in cols}})
        parts.append(wide.melt(id_vars=["run", "time_utc", "t_s"], var_name="series", value_name="value"))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(
        columns=["run", "time_utc", "t_s", "series", "value"])


def timeseries_figure(runs: list[RunData], series: list[str], relative: bool = True) -> go.Figure:
    """Per-unit series on the right axis, everything else (kW, kvar, ...) on the left; x is the
    time since each run's start (hours) unless `relative` is off."""
    fig = go.Figure()
    for r in runs:
        ts = r.timeseries
        if relative:
            t_s = ts["t_s"] if "t_s" in ts else (ts["time"] - ts["time"].iloc[0]).dt.total_seconds()
            x = (t_s / 3600.0).round(6).tolist()
        else:
            x = ts["time"]
        for c in sorted(series, key=natural_key):
            if c in ts:
                fig.add_trace(go.Scatter(x=x, y=ts[c], mode="lines",
                                         name=f"{c} ({r.name})" if len(runs) > 1 else c,
                                         yaxis="y2" if c.endswith("_pu") else "y"))
    fig.update_layout(template="plotly_white", height=420, margin=dict(t=30, l=60, r=60, b=40),
                      legend=dict(orientation="h", y=-0.2),
                      xaxis=dict(title="time since start (h)" if relative else "time (UTC)"),
                      yaxis=dict(title="kW / kvar / ... (left)"),
                      yaxis2=dict(title="voltage (pu, right)", overlaying="y", side="right", showgrid=False))
    return fig


def kpi_table(runs: list[RunData]):
    """KPI rows formatted for reading; with two or more runs, B − A and its relative change."""
    flat = [flat_kpis(r.summary) for r in runs]
    keys = sorted(set().union(*[set(f) for f in flat]), key=natural_key) if flat else []
    rows = []
    for k in keys:
        row = {"kpi": k, **{r.name: fmt_num(f.get(k)) for r, f in zip(runs, flat)}}
        if len(runs) >= 2:
            row["difference"], row["change"] = delta(flat[0].get(k), flat[1].get(k))
        rows.append(row)
    cols = [{"name": "KPI", "id": "kpi"}] + [{"name": r.name, "id": r.name} for r in runs]
    if len(runs) >= 2:
        cols += [{"name": "Δ (B − A)", "id": "difference"}, {"name": "Δ %", "id": "change"}]
    return rows, cols


def event_table(runs: list[RunData]):
    rows = []
    for r in runs:
        for e in r.events:
            rows.append({"run": r.name, "time": e.get("time"), "kind": e.get("kind"),
                         "detail": ", ".join(f"{k}={v}" for k, v in e.items()
                                             if k not in ("time", "t_s", "kind"))})
    cols = [{"name": c, "id": c} for c in ("run", "time", "kind", "detail")]
    return rows, cols
