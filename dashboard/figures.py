"""Plotly figures as plain dicts for the live view: plotly.js renders them as-is, and skipping
graph_objects validation makes a refresh ~100x cheaper on the dashboard server."""

from __future__ import annotations

_AXIS = {"gridcolor": "#eee", "zerolinecolor": "#ccc", "linecolor": "#ccc", "automargin": True}


def base_layout(height: int, title: str | None = None, **kw) -> dict:
    """A light 'plotly_white'-like look without shipping the template on every refresh."""
    lay = {"height": height, "paper_bgcolor": "white", "plot_bgcolor": "white",
               "font": {"family": "sans-serif", "size": 12}, "margin": {"t": 30, "l": 50, "r": 10, "b": 40}}
    if title:
        lay["title"] = {"text": title, "font": {"size": 13}, "x": 0.01, "xanchor": "left"}
    for k, v in kw.items():
        lay[k] = {**_AXIS, **v} if k.startswith(("xaxis", "yaxis")) and isinstance(v, dict) else v
    lay.setdefault("xaxis", dict(_AXIS))
    lay.setdefault("yaxis", dict(_AXIS))
    return lay


def message_figure(text: str, height: int = 260) -> dict:
    """An empty figure that says why it is empty (API down, endpoint missing)."""
    return {"data": [], "layout": base_layout(
        height, xaxis={"visible": False}, yaxis={"visible": False}, margin={"t": 20, "l": 10, "r": 10, "b": 10},
        annotations=[{"text": text, "showarrow": False, "x": 0.5, "y": 0.5, "xref": "paper", "yref": "paper",
                          "font": {"size": 13, "color": "#888"}}])}
