"""report.html of a sweep: every KPI's distribution; for one- or two-parameter designs each KPI
against the parameter with the band of seeds (min..max) and the median; limit lines where the
KPI is a limit; where the band first leaves a limit. Lines carry their labels at their ends, so
nothing needs a legend."""

from __future__ import annotations

import html

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from hil.sweep.spec import Sweep, default_limits

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def varying(sweep: Sweep, df: pd.DataFrame) -> list[str]:
    """Parameter columns with more than one value among the finished samples."""
    return [p.column for p in sweep.spec.parameters
            if p.column in df and df[p.column].nunique(dropna=False) > 1]


def band(df: pd.DataFrame, x: str, kpi: str) -> pd.DataFrame:
    ok = df[df["status"] == "ok"]
    g = ok.groupby(x, sort=True)[kpi]
    return pd.DataFrame({"min": g.min(), "median": g.median(), "max": g.max(), "n": g.count()})


def first_exceedance(sweep: Sweep, df: pd.DataFrame) -> dict[str, dict]:
    """For a one-parameter design: per limited KPI, the first parameter value where the worst
    seed and where the median leave the limit (None: never within the sweep)."""
    xs = varying(sweep, df)
    if len(xs) != 1 or not pd.api.types.is_numeric_dtype(df[xs[0]]):
        return {}
    out = {}
    for kpi, lim in default_limits(sweep).items():
        b = band(df, xs[0], kpi)
        if b.empty:
            continue

        def first(col, b=b, lim=lim):
            over = np.zeros(len(b), bool)
            if lim.max is not None:
                over |= b[col].to_numpy() > lim.max + 1e-12
            if lim.min is not None:
                over |= b[col].to_numpy() < lim.min - 1e-12
            hits = b.index[over]
            return None if len(hits) == 0 else float(hits[0])

        edge = "max" if lim.max is not None else "min"
        limit = lim.max if lim.max is not None else lim.min
        worst = first(edge)
        out[kpi] = {"parameter": xs[0], "limit": limit, "first_worst_seed": worst,
                    "first_median": first("median"), "crossing_worst_seed": _crossing(b, edge, limit, worst)}
    return out


def _crossing(b: pd.DataFrame, edge: str, limit: float, first_out) -> float | None:
    """Where the band's edge meets the limit, linearly between the last step inside and the
    first outside (None when the first step is already outside or none is)."""
    if first_out is None:
        return None
    i = list(b.index).index(first_out)
    if i == 0:
        return None
    x0, x1 = float(b.index[i - 1]), float(b.index[i])
    y0, y1 = float(b[edge].iloc[i - 1]), float(b[edge].iloc[i])
    return x0 + (x1 - x0) * (limit - y0) / (y1 - y0) if y1 != y0 else x1


def _limit_lines(fig, lim, horizontal: bool) -> None:
    for v, word in ((lim.max, "max"), (lim.min, "min")):
        if v is None:
            continue
        if horizontal:
            fig.add_hline(y=v, line_dash="dash", line_color="black",
                          annotation_text=f"limit {word} {v:g}", annotation_position="top left")
        else:
            fig.add_vline(x=v, line_dash="dash", line_color="black",
                          annotation_text=f"limit {word} {v:g}", annotation_position="top right")


def _against(df, x: str, kpi: str, lim, group: str | None, over: str | None = None) -> go.Figure:
    fig = go.Figure()
    groups = [(None, df)] if group is None else list(df.groupby(group, sort=True))
    for i, (gv, sub) in enumerate(groups):
        c = COLORS[i % len(COLORS)]
        b = band(sub, x, kpi)
        if b.empty:
            continue
        label = "median" if group is None else f"{group}={gv}"
        xs = list(b.index)
        fig.add_trace(go.Scatter(x=xs + xs[::-1], y=list(b["max"]) + list(b["min"])[::-1],
                                 fill="toself", fillcolor=c, opacity=0.18, line=dict(width=0),
                                 hoverinfo="skip", showlegend=False))
        fig.add_trace(go.Scatter(x=xs, y=b["median"], mode="lines+markers", line=dict(color=c),
                                 name=label, showlegend=False,
                                 hovertemplate=f"{x}=%{{x}}<br>{kpi} median=%{{y}}<extra>{label}</extra>"))
        ok = sub[sub["status"] == "ok"]
        fig.add_trace(go.Scatter(x=ok[x], y=ok[kpi], mode="markers", marker=dict(color=c, size=4),
                                 opacity=0.5, showlegend=False, customdata=ok[["sample_id", "seed"]],
                                 hovertemplate="sample %{customdata[0]} seed %{customdata[1]}<br>"
                                               f"{x}=%{{x}} {kpi}=%{{y}}<extra></extra>"))
        fig.add_annotation(x=xs[-1], y=b["median"].iloc[-1], text=label, showarrow=False,
                           xanchor="left", xshift=6, font=dict(color=c))
    if lim is not None:
        _limit_lines(fig, lim, horizontal=True)
    seeds = int(df["replicate"].nunique()) if "replicate" in df else 1
    over = over or f"{seeds} seeds"
    fig.update_layout(title=f"{kpi} against {x} (line: median, band: min..max over {over})",
                      xaxis_title=x, yaxis_title=kpi, template="plotly_white", height=420,
                      margin=dict(r=140))
    return fig


def _distribution(df, kpi: str, lim) -> go.Figure:
    ok = df[df["status"] == "ok"]
    fig = go.Figure(go.Histogram(x=ok[kpi], nbinsx=min(40, max(5, len(ok) // 2)), marker_color=COLORS[0],
                                 showlegend=False))
    if lim is not None:
        _limit_lines(fig, lim, horizontal=False)
    fig.update_layout(title=f"{kpi}: distribution over {len(ok)} samples", xaxis_title=kpi,
                      yaxis_title="samples", template="plotly_white", height=320)
    return fig


def write_report(path, sweep: Sweep, df: pd.DataFrame) -> None:
    limits = default_limits(sweep)
    xs = varying(sweep, df)
    figs = []
    for kpi in sweep.spec.kpis:
        if df.empty or df[kpi].notna().sum() == 0:
            continue
        lim = limits.get(kpi)
        if 1 <= len(xs) <= 2:
            figs.append(_against(df, xs[0], kpi, lim, xs[1] if len(xs) == 2 else None))
        elif len(xs) > 2:  # one view per parameter, the band spanning the others and the seeds
            figs += [_against(df, x, kpi, lim, None, over="the other parameters and the seeds") for x in xs]
        figs.append(_distribution(df, kpi, lim))
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0)) for i, f in enumerate(figs)]
    n_fail = int((df["status"] != "ok").sum()) if not df.empty else 0
    found = first_exceedance(sweep, df)
    lines = [f"<li>{html.escape(describe(k, v))}</li>" for k, v in found.items()]
    fails = df[df["status"] != "ok"][["sample_id", "seed", "error"]] if n_fail else None
    head = (f"<h1>gridtwin sweep: {html.escape(sweep.spec.name)}</h1>"
            f"<p>{html.escape(sweep.spec.description)}</p>"
            f"<p>{len(df)} of {len(sweep.samples)} samples, {n_fail} failed; design "
            f"{sweep.spec.design}, {sweep.spec.seeds} seeds per point, base scenario "
            f"{html.escape(sweep.base_path.name)}</p>" + (f"<ul>{''.join(lines)}</ul>" if lines else ""))
    tail = ("<h2>Failed samples</h2>" + fails.to_html(index=False)) if fails is not None else ""
    path.write_text(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(sweep.spec.name)}"
                    f"</title></head><body>{head}{''.join(parts)}{tail}</body></html>")


def _fmt(v) -> str:
    return "not within the sweep" if v is None else f"{v:g}"


def describe(kpi: str, v: dict) -> str:
    """One line: where the band of seeds first leaves a KPI's limit."""
    cross = v.get("crossing_worst_seed")
    at = f"; the worst seed's edge crosses at {v['parameter']} ~ {cross:.3g} (linear)" if cross is not None else ""
    return (f"{kpi}: limit {v['limit']:g} first left at {v['parameter']} = {_fmt(v['first_worst_seed'])} "
            f"(worst seed), {_fmt(v['first_median'])} (median){at}")
