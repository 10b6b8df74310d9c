"""Sweep viewer: a sweep's results table (sweeps/<name>-<utc>/results.parquet, one row per
sample) formatted, sortable, filterable and exportable as CSV, and one KPI against one
parameter as a scatter, coloured by replicate."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, dash_table, dcc, html

from dashboard.run_data import RunFolderError
from dashboard.run_view import fmt_num, natural_key

META = ("point", "replicate", "seed", "status", "error", "worker", "wall_s", "run_dir", "assertions_failed")


def load_sweep(path: str | Path) -> tuple[str, pd.DataFrame]:
    p = Path(path)
    f = p / "results.parquet" if p.is_dir() else p
    if not f.is_file():
        raise RunFolderError(f"{p}: not a sweep folder (no results.parquet)")
    return (p.name if p.is_dir() else p.parent.name), pd.read_parquet(f)


def axes(df: pd.DataFrame) -> tuple[list[str], list[str]]:
    """(parameter columns, numeric KPI columns), naturally sorted. A parameter is constant
    within each design point and varies between points; a KPI is any other numeric column."""
    cols = [c for c in df.columns if c not in META]
    varying = [c for c in cols if df[c].nunique(dropna=True) > 1]
    if "point" in df:
        per_point = df.groupby("point")
        params = [c for c in varying if (per_point[c].nunique(dropna=False) <= 1).all()]
    else:
        params = [c for c in varying if not pd.api.types.is_float_dtype(df[c])]
    kpis = [c for c in cols if c not in params and pd.api.types.is_numeric_dtype(df[c])]
    return sorted(params, key=natural_key), sorted(kpis, key=natural_key)


def layout(sweeps: list[tuple[str, pd.DataFrame]]) -> html.Div:
    name, df = sweeps[0]
    params, kpis = axes(df)
    return html.Div([
        html.H2(f"Sweep {name}"),
        html.Div([
            html.Label("x (parameter)"), dcc.Dropdown(id="sweep-x", options=params + kpis,
                                                       value=params[0] if params else None),
            html.Label("y (KPI)"), dcc.Dropdown(id="sweep-y", options=kpis, value=kpis[0] if kpis else None),
        ], style={"maxWidth": "700px"}),
        dcc.Graph(id="sweep-scatter"),
        html.H3(f"Samples ({len(df)} rows; {int((df.get('status', pd.Series()) != 'ok').sum())} not ok)"),
        dash_table.DataTable(id="sweep-table", data=table_rows(df), columns=[{"name": c, "id": c} for c in df.columns
                                                                            if c != "run_dir"],
                             page_size=25, sort_action="native", filter_action="native", export_format="csv",
                             export_headers="display",
                             style_cell={"fontFamily": "monospace", "fontSize": "12px", "maxWidth": "220px",
                                         "overflow": "hidden", "textOverflow": "ellipsis"},
                             style_table={"overflowX": "auto"}),
    ])


def table_rows(df: pd.DataFrame) -> list[dict]:
    out = []
    for rec in df.to_dict("records"):
        out.append({k: fmt_num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else
                    ("" if v is None else str(v)) for k, v in rec.items()})
    return out


def scatter(df: pd.DataFrame, x: str | None, y: str | None) -> go.Figure:
    fig = go.Figure()
    if x in df and y in df:
        groups = df.groupby("replicate") if "replicate" in df else [("all", df)]
        for rep, part in groups:
            fig.add_trace(go.Scatter(x=part[x].tolist(), y=part[y].tolist(), mode="markers", marker={"size": 9},
                                     name=f"replicate {rep}"))
    fig.update_layout(template="plotly_white", height=400, margin=dict(t=30, l=60, r=20, b=50),
                      xaxis_title=x, yaxis_title=y, legend=dict(orientation="h", y=-0.2))
    return fig


def register(app, sweeps: list[tuple[str, pd.DataFrame]]) -> None:
    df = sweeps[0][1]

    @app.callback(Output("sweep-scatter", "figure"), Input("sweep-x", "value"), Input("sweep-y", "value"))
    def update(x, y):
        return scatter(df, x, y)
