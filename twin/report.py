"""report.html: a self-contained Plotly page of voltages, feeder-head power and fleet aggregates."""

from __future__ import annotations

import html
import json

import plotly.graph_objects as go
from plotly.subplots import make_subplots


def write_report(path, df, summary: dict) -> None:
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06,
                        subplot_titles=("Bus voltages (pu)", "Feeder head (kW / kvar)",
                                        "Fleet aggregates (kW)"))
    for c in [c for c in df.columns if c.startswith("v_pu.bus")]:
        fig.add_trace(go.Scattergl(x=df["time"], y=df[c], name=c[5:], mode="lines",
                                   line=dict(width=1), legendgroup="v"), 1, 1)
    for c, name in [("head_p_kw", "P head"), ("head_q_kvar", "Q head"), ("losses_kw", "losses")]:
        if c in df:
            fig.add_trace(go.Scattergl(x=df["time"], y=df[c], name=name, mode="lines"), 2, 1)
    for c in [c for c in df.columns if c.endswith(".p_kw") and "[" not in c]:
        fig.add_trace(go.Scattergl(x=df["time"], y=df[c], name=c, mode="lines"), 3, 1)
    fig.update_layout(height=1000, title=f"gridtwin run: {summary['scenario']}",
                      template="plotly_white")
    kpis = html.escape(json.dumps({k: v for k, v in summary.items() if k != "groups"}, indent=1,
                                  default=str))
    body = fig.to_html(full_html=False, include_plotlyjs=True)
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{summary['scenario']}"
                    f"</title></head><body>{body}<h2>Summary</h2><pre>{kpis}</pre></body></html>")
