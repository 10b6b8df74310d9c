"""Run viewer: browse a finished run's timeseries, events and KPIs; compare two runs."""

from __future__ import annotations

import plotly.graph_objects as go
from dash import Input, Output, dash_table, dcc, html

from dashboard.run_data import RunData, flat_kpis

DEFAULT_SERIES = ["head_p_kw", "v_min_pu", "v_max_pu"]


def layout(runs: list[RunData]) -> html.Div:
    names = [r.name for r in runs]
    cols = sorted(set().union(*[set(r.columns()) for r in runs])) if runs else []
    return html.Div([
        html.H2("Run viewer"),
        html.Div([
            html.Label("Runs"),
            dcc.Dropdown(id="run-select", options=names, value=names[:2], multi=True),
            html.Label("Series"),
            dcc.Dropdown(id="series-select", options=cols,
                         value=[c for c in DEFAULT_SERIES if c in cols], multi=True),
        ], style={"maxWidth": "900px"}),
        dcc.Graph(id="run-timeseries"),
        html.H3("KPIs"),
        dash_table.DataTable(id="run-kpis", page_size=40, style_cell={"fontFamily": "monospace"}),
        html.H3("Events"),
        dash_table.DataTable(id="run-events", page_size=15, filter_action="native",
                             sort_action="native", style_cell={"fontFamily": "monospace"}),
    ])


def register(app, runs: list[RunData]) -> None:
    by_name = {r.name: r for r in runs}

    @app.callback(Output("run-timeseries", "figure"), Output("run-kpis", "data"),
                  Output("run-kpis", "columns"), Output("run-events", "data"),
                  Output("run-events", "columns"),
                  Input("run-select", "value"), Input("series-select", "value"))
    def update(selected, series):
        selected = [by_name[n] for n in (selected or []) if n in by_name]
        return timeseries_figure(selected, series or []), *kpi_table(selected), *event_table(selected)


def timeseries_figure(runs: list[RunData], series: list[str]) -> go.Figure:
    """Per-unit series on the right axis, everything else (kW, kvar, ...) on the left."""
    fig = go.Figure()
    for r in runs:
        for c in series:
            if c in r.timeseries:
                fig.add_trace(go.Scatter(x=r.timeseries["time"], y=r.timeseries[c], mode="lines",
                                         name=f"{c} ({r.name})" if len(runs) > 1 else c,
                                         yaxis="y2" if c.endswith("_pu") else "y"))
    fig.update_layout(template="plotly_white", height=420, margin=dict(t=30, l=50, r=50, b=40),
                      legend=dict(orientation="h"), yaxis=dict(title="kW / kvar / ..."),
                      yaxis2=dict(title="pu", overlaying="y", side="right", showgrid=False))
    return fig


def kpi_table(runs: list[RunData]):
    flat = [flat_kpis(r.summary) for r in runs]
    keys = sorted(set().union(*[set(f) for f in flat])) if flat else []
    rows = [{"kpi": k, **{r.name: f.get(k) for r, f in zip(runs, flat)}} for k in keys]
    cols = [{"name": "kpi", "id": "kpi"}] + [{"name": r.name, "id": r.name} for r in runs]
    if len(runs) == 2:
        a, b = runs[0].name, runs[1].name
        for row in rows:
            va, vb = row.get(a), row.get(b)
            row["difference"] = (vb - va) if isinstance(va, (int, float)) and isinstance(vb, (int, float)) \
                and not isinstance(va, bool) else None
        cols.append({"name": f"{b} - {a}", "id": "difference"})
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
