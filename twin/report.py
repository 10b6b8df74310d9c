"""report.html: a readable one-page summary of a run (KPI tables, then one figure per question).

Figures: the voltage band across all buses (min/max, 5-95 % percentiles, median, the limit
lines, the worst buses by their feeder names), feeder-head P/Q, one figure per fleet class, a
DR panel per event and a violations timeline; DR events and violation intervals are shaded
on every time axis. plotly.js is written once beside the run folders (`plotly-<ver>.min.js`)
and referenced, so a report stays well under 1 MB; long runs are binned to at most
MAX_POINTS points per trace (min/max kept for the voltage band).
"""

from __future__ import annotations

import html
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

MAX_POINTS = 1500
DR_COLOUR = "rgba(23,190,207,0.15)"
VIOL_COLOUR = "rgba(214,39,40,0.12)"
CSS = """body{font-family:sans-serif;margin:16px 28px;color:#222;max-width:1300px}
h1{font-size:22px;margin-bottom:2px} h2{font-size:17px;margin:22px 0 6px;border-bottom:1px solid #ddd}
.sub{color:#555;font-size:13px} table{border-collapse:collapse;font-size:13px;margin:4px 18px 8px 0}
td,th{border:1px solid #ddd;padding:3px 8px} th{background:#f5f5f5;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums} .ok{color:#070;font-weight:bold}
.bad{color:#b00;font-weight:bold} .tables{display:flex;flex-wrap:wrap;align-items:flex-start}
.note{color:#666;font-size:12px}"""
UNITS = {"kw": "kW", "kvar": "kvar", "kwh": "kWh", "pu": "pu", "pct": "%", "c": "°C", "s": "s",
         "eur": "EUR", "w_m2": "W/m²", "eur_per_mwh": "EUR/MWh"}


def h_mm(seconds: float) -> str:
    """A duration as h:mm ('1:25'), rounded to the minute; seconds shown when under a minute."""
    if 0 < seconds < 60:
        return f"{seconds:g} s"
    m = round(seconds / 60.0)
    return f"{m // 60}:{m % 60:02d} h"


def unit_of(name: str) -> str:
    """'soc_kwh' -> 'kWh', 'p_avail_kw' -> 'kW', 'price_eur_per_mwh' -> 'EUR/MWh' (from the name)."""
    base = name.rsplit(".", 1)[-1]
    for suf in sorted(UNITS, key=len, reverse=True):
        if base.endswith("_" + suf) or base == suf:
            return UNITS[suf]
    return ""


def plotly_js(out_dir: Path) -> str:
    """Write plotly.min.js once into the folder holding the run folders; return the relative src."""
    import plotly
    from plotly.offline import get_plotlyjs

    target = out_dir.parent / f"plotly-{plotly.__version__}.min.js"
    if not target.exists():
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(get_plotlyjs())
        os.replace(tmp, target)  # atomic: parallel runs never read half a file
    return f"../{target.name}"


def _ms(times) -> np.ndarray:
    """Epoch milliseconds (Plotly date axes read them as UTC, and they travel as compact binary)."""
    t = pd.DatetimeIndex(pd.to_datetime(list(times) if not hasattr(times, "dtype") else times, utc=True))
    return t.tz_convert(None).to_numpy().astype("datetime64[ms]").astype(np.int64).astype(np.float64)


def _bins(n: int, max_points: int = MAX_POINTS) -> np.ndarray | None:
    return None if n <= max_points else (np.arange(n) * max_points // n)


def _agg(x: np.ndarray, bins, how: str = "mean") -> np.ndarray:
    if bins is None:
        return x
    s = pd.Series(np.asarray(x, float)).groupby(bins)
    return getattr(s, how)().to_numpy()


def _f32(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float32)


def _layout(title: str, ytitle: str, height: int = 340, **kw) -> dict:
    lay = {"title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 14}},
           "template": "plotly_white", "height": height, "margin": {"t": 40, "l": 70, "r": 20, "b": 60},
           "xaxis": {"title": {"text": "time (UTC)"}, "type": "date"},
           "yaxis": {"title": {"text": ytitle}},
           "legend": {"orientation": "h", "y": -0.3}, "hovermode": "x unified"}
    lay.update(kw)
    return lay


def _fmt(v, nd: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, np.integer)):
        return f"{int(v):,}"
    if isinstance(v, (float, np.floating)):
        if not np.isfinite(v):
            return "–"
        if v != 0 and abs(v) < 10 ** -nd:
            return f"{v:.2e}"
        return f"{v:,.{nd}f}".rstrip("0").rstrip(".") if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items())
    return str(v)


def _table(rows: list[list], head: list[str] | None = None, cls: list[str] | None = None) -> str:
    out = ["<table>"]
    if head:
        out.append("<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>")
    for r in rows:
        cells = []
        for i, v in enumerate(r):
            if isinstance(v, tuple) and len(v) == 2 and v[0] == "html":
                cells.append(f"<td>{v[1]}</td>")
            else:
                num = isinstance(v, (int, float, np.number)) and not isinstance(v, bool)
                cells.append(f"<td class='n'>{_fmt(v)}</td>" if num else f"<td>{html.escape(_fmt(v))}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table>")
    return "".join(out)


class _Report:
    def __init__(self, df: pd.DataFrame, summary: dict, bus_names: dict[str, str], limits: dict,
                 events: list[dict]):
        self.df, self.s, self.limits, self.events = df, summary, limits, events
        self.bus_names = bus_names
        self.bins = _bins(len(df))
        self.x = _ms(df["time"]) if "time" in df else np.arange(len(df), dtype=float)
        self.xb = _agg(self.x, self.bins, "first")
        self.figs: list[tuple[str, dict]] = []
        self.shapes = self._shapes()

    def col(self, c: str, how: str = "mean") -> np.ndarray:
        return _f32(_agg(self.df[c].to_numpy(float), self.bins, how))

    # -- shading: DR events and violation intervals, on every time axis --------------------
    def dr_windows(self) -> list[tuple[str, float, float, dict]]:
        start = {e.get("event_id"): e for e in self.events if e.get("kind") == "dr_event_start"}
        ends = {e.get("event_id"): e for e in self.events if e.get("kind") == "dr_event_end"}
        out = []
        for eid, e in start.items():
            t0 = float(_ms([e["time"]])[0])
            t1 = float(_ms([ends[eid]["time"]])[0]) if eid in ends else t0 + 1e3 * float(e.get("duration_s") or 0)
            out.append((str(eid), t0, t1, e))
        return out

    def violation_windows(self) -> list[tuple[float, float]]:
        if "violations" not in self.df:
            return []
        bad = self.df["violations"].to_numpy(float) > 0
        step = float(np.median(np.diff(self.x))) if len(self.x) > 1 else 60e3
        out, start = [], None
        for i, b in enumerate(bad):
            if b and start is None:
                start = self.x[i]
            if not b and start is not None:
                out.append((start, self.x[i]))
                start = None
        if start is not None:
            out.append((start, self.x[-1] + step))
        return out

    def _shapes(self) -> list[dict]:
        sh = [{"type": "rect", "xref": "x", "yref": "paper", "x0": a, "x1": b, "y0": 0, "y1": 1,
               "fillcolor": DR_COLOUR, "line": {"width": 0}, "layer": "below"} for _, a, b, _ in self.dr_windows()]
        sh += [{"type": "rect", "xref": "x", "yref": "paper", "x0": a, "x1": b, "y0": 0, "y1": 1,
                "fillcolor": VIOL_COLOUR, "line": {"width": 0}, "layer": "below"}
               for a, b in self.violation_windows()[:200]]
        return sh

    def add(self, key: str, data: list[dict], layout: dict, shaded: bool = True) -> None:
        if shaded:
            layout.setdefault("shapes", []).extend(self.shapes)
        self.figs.append((key, {"data": data, "layout": layout}))

    # -- figures ---------------------------------------------------------------------------
    def voltage(self) -> list[list]:
        vcols = [c for c in self.df.columns if c.startswith("v_pu.")]
        if not vcols:
            return []
        V = self.df[vcols].to_numpy(float)
        lo_lim, hi_lim = self.limits.get("v_min_pu", 0.95), self.limits.get("v_max_pu", 1.05)
        with np.errstate(all="ignore"):
            q = np.nanpercentile(V, [5, 50, 95], axis=1)
            vmin, vmax = np.nanmin(V, axis=1), np.nanmax(V, axis=1)
        x = self.xb
        d = [{"type": "scatter", "x": x, "y": _f32(_agg(vmax, self.bins, "max")), "mode": "lines",
              "line": {"width": 0}, "showlegend": False, "hoverinfo": "skip"},
             {"type": "scatter", "x": x, "y": _f32(_agg(vmin, self.bins, "min")), "mode": "lines",
              "line": {"width": 0}, "fill": "tonexty", "fillcolor": "rgba(31,119,180,0.15)",
              "name": "min–max across buses"},
             {"type": "scatter", "x": x, "y": _f32(_agg(q[2], self.bins)), "mode": "lines", "line": {"width": 0},
              "showlegend": False, "hoverinfo": "skip"},
             {"type": "scatter", "x": x, "y": _f32(_agg(q[0], self.bins)), "mode": "lines", "line": {"width": 0},
              "fill": "tonexty", "fillcolor": "rgba(31,119,180,0.35)", "name": "5–95 % of buses"},
             {"type": "scatter", "x": x, "y": _f32(_agg(q[1], self.bins)), "mode": "lines",
              "line": {"color": "#1f77b4", "width": 1.5}, "name": "median bus"}]
        # worst buses: highest maximum, lowest minimum; minutes outside the band
        step_min = (float(np.median(np.diff(self.x))) / 60e3) if len(self.x) > 1 else 1.0
        rows, worst = [], []
        for k in list(np.argsort(-np.nanmax(V, axis=0))[:3]) + list(np.argsort(np.nanmin(V, axis=0))[:3]):
            c = vcols[k]
            name = self.bus_names.get(c[5:], c[5:])
            out_min = float(((V[:, k] > hi_lim) | (V[:, k] < lo_lim)).sum() * step_min)
            rows.append([f"{name} ({c[5:]})", float(np.nanmin(V[:, k])), float(np.nanmax(V[:, k])), out_min])
            worst.append((k, name))
        for (k, name), colour, label in ((worst[0], "#d62728", "highest"), (worst[3], "#9467bd", "lowest")):
            d.append({"type": "scatter", "x": x, "y": _f32(_agg(V[:, k], self.bins,
                                                               "max" if label == "highest" else "min")),
                      "mode": "lines", "line": {"color": colour, "width": 1.2},
                      "name": f"{label}: {name}"})
        lim = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
                "line": {"color": "#d62728", "dash": "dash", "width": 1.5}} for y in (lo_lim, hi_lim)]
        ann = [{"xref": "paper", "x": 1.0, "xanchor": "right", "y": y, "yanchor": "bottom", "showarrow": False,
                "text": f"limit {y:g} pu", "font": {"color": "#d62728", "size": 11}} for y in (lo_lim, hi_lim)]
        lo = min(lo_lim, float(np.nanmin(vmin))) - 0.01
        hi = max(hi_lim, float(np.nanmax(vmax))) + 0.01
        self.add("voltage", d, _layout(f"Bus voltage band across all {len(vcols)} buses", "voltage (pu)", 380,
                                        shapes=lim, annotations=ann, yaxis={"title": {"text": "voltage (pu)"},
                                                                            "range": [lo, hi]}))
        return rows

    def head(self) -> None:
        d = []
        for c, name in (("head_p_kw", "head P (kW, import +)"), ("head_q_kvar", "head Q (kvar)"),
                        ("losses_kw", "losses (kW)")):
            if c in self.df:
                d.append({"type": "scatter", "x": self.xb, "y": self.col(c), "mode": "lines", "name": name})
        if d:
            self.add("head", d, _layout("Feeder head power", "power (kW / kvar)"))

    def classes(self) -> None:
        groups = self.s.get("groups") or {}
        for g, kp in groups.items():
            cols = [c for c in self.df.columns if c.startswith(g + ".") and "[" not in c]
            if not cols:
                continue
            d = []
            left = [c for c in cols if unit_of(c) in ("kW", "kvar")]
            right = [c for c in cols if c not in left]
            for c in left:
                d.append({"type": "scatter", "x": self.xb, "y": self.col(c), "mode": "lines",
                          "name": f"{c[len(g) + 1:]} ({unit_of(c)})"})
            units = sorted({unit_of(c) or c[len(g) + 1:] for c in right})
            for c in right:
                d.append({"type": "scatter", "x": self.xb, "y": self.col(c), "mode": "lines", "yaxis": "y2",
                          "line": {"dash": "dot"}, "name": f"{c[len(g) + 1:]} ({unit_of(c) or '-'}, right axis)"})
            extra = {"yaxis2": {"title": {"text": " / ".join(units)}, "overlaying": "y", "side": "right",
                                "showgrid": False}} if right else {}
            lay = _layout(f"Fleet class {g} ({kp.get('kind', '')}, {kp.get('count', '?')} devices)",
                          "power (kW / kvar, load +)", 300, **extra)
            if right:
                lay["margin"]["r"] = 70
            self.add(f"class-{g}", d, lay)

    def dr(self) -> None:
        dr = self.s.get("dr") or {}
        groups = self.s.get("groups") or {}
        for eid, t0, t1, e in self.dr_windows():
            named = e.get("groups") or [g for g, k in groups.items() if k.get("kind") != "pv"]  # PV is not shed
            cols = [f"{g}.p_kw" for g in named if f"{g}.p_kw" in self.df]
            if not cols:
                continue
            pad = max(1800e3, 0.5 * (t1 - t0))
            m = (self.x >= t0 - pad) & (self.x <= t1 + pad)
            x = self.x[m]
            p = self.df[cols].to_numpy(float)[m].sum(axis=1)
            pre = (x >= t0 - 1800e3) & (x < t0)
            base = float(np.nanmean(p[pre])) if pre.any() else float(p[0]) if p.size else 0.0
            req = float(e.get("reduction_kw") or (dr.get(eid) or {}).get("requested_kw") or 0.0)
            inside = (x >= t0) & (x < t1)
            d = [{"type": "scatter", "x": x, "y": _f32(p), "mode": "lines",
                  "name": f"P of {', '.join(c[:-5] for c in cols)} (kW, left)", "line": {"color": "#1f77b4"}},
                 {"type": "scatter", "x": [t0 - pad, t1 + pad], "y": [base, base], "mode": "lines",
                  "name": "baseline: mean of the 30 min before (kW, left)",
                  "line": {"dash": "dash", "color": "#7f7f7f"}},
                 {"type": "scatter", "x": [t0, t1], "y": [req, req], "mode": "lines", "yaxis": "y2",
                  "name": f"requested reduction {req:g} kW (right)", "line": {"dash": "dot", "color": "#d62728"}},
                 {"type": "scatter", "x": x[inside], "y": _f32(base - p[inside]), "mode": "lines+markers",
                  "yaxis": "y2", "marker": {"size": 4},
                  "name": "delivered vs this baseline (kW, right)", "line": {"color": "#17becf"}}]
            res = dr.get(eid) or {}
            pct = res.get("assessed_delivery_pct", res.get("delivery_pct"))
            title = (f"DR event {eid}: requested {req:g} kW, controller-assessed delivery "
                     f"{_fmt(res.get('assessed_delivered_kw', res.get('delivered_kw')))} kW"
                     + (f" ({pct:.0f} %)" if isinstance(pct, (int, float)) else "")
                     + (f", status {res['status']}" if res.get("status") else ""))
            lay = _layout(title, "power (kW, load +)", 340, yaxis2={
                "title": {"text": "reduction (kW)"}, "overlaying": "y", "side": "right", "showgrid": False,
                "rangemode": "tozero"})
            lay["margin"]["r"] = 70
            lay["shapes"] = [{"type": "rect", "xref": "x", "yref": "paper", "x0": t0, "x1": t1, "y0": 0, "y1": 1,
                              "fillcolor": DR_COLOUR, "line": {"width": 0}, "layer": "below"}]
            self.add(f"dr-{eid}", d, lay, shaded=False)

    def violations(self) -> None:
        d = []
        if "violations" in self.df:
            d.append({"type": "scatter", "x": self.xb, "y": self.col("violations", "max"), "mode": "lines",
                      "line": {"shape": "hv", "color": "#d62728"}, "fill": "tozeroy",
                      "name": "elements outside limits (count)"})
        lay = _layout("Violations timeline", "violations (count)", 300)
        for c, lim, name in (("line_loading_max_pct", self.limits.get("line_loading_max_pct", 100), "line"),
                             ("trafo_loading_max_pct", self.limits.get("trafo_loading_max_pct", 100), "trafo")):
            if c in self.df:
                d.append({"type": "scatter", "x": self.xb, "y": self.col(c, "max"), "mode": "lines", "yaxis": "y2",
                          "line": {"dash": "dot"}, "name": f"max {name} loading (%, right; limit {lim:g} %)"})
        lay["yaxis"]["rangemode"] = "tozero"
        lay["yaxis2"] = {"title": {"text": "loading (%)"}, "overlaying": "y", "side": "right", "showgrid": False,
                         "rangemode": "tozero"}
        lay["margin"]["r"] = 70
        if d:
            self.add("violations", d, lay)

    # -- tables ----------------------------------------------------------------------------
    def kpi_tables(self, worst_rows) -> str:
        s = self.s
        v, lo, hd, vi = s.get("voltage", {}), s.get("loading", {}), s.get("head", {}), s.get("violations", {})
        main = [["simulated", f"{s.get('duration_s', 0) / 3600:g} h from {s.get('start', '')} (UTC)"],
                ["wall time", f"{_fmt(s.get('wall_s'))} s (x{_fmt(s.get('speedup'), 1)})"],
                ["voltage min / max (pu)", f"{_fmt(v.get('min_pu'), 4)} / {_fmt(v.get('max_pu'), 4)}"],
                ["voltage limits (pu)", f"{self.limits.get('v_min_pu', 0.95):g} / {self.limits.get('v_max_pu', 1.05):g}"],
                ["violation minutes", vi.get("minutes")],
                ["violation intervals by kind", vi.get("by_kind_intervals")],
                ["max line / trafo loading (%)", f"{_fmt(lo.get('line_max_pct'), 1)} / {_fmt(lo.get('trafo_max_pct'), 1)}"],
                ["head P min / max (kW)", f"{_fmt(hd.get('p_min_kw'), 1)} / {_fmt(hd.get('p_max_kw'), 1)}"],
                ["faults", s.get("faults")]]
        energy = [[k, x] for k, x in (s.get("energy_kwh") or {}).items()]
        out = ["<div class='tables'>", "<div><b>Run</b>", _table(main), "</div>",
               "<div><b>Energy (kWh, load +, generation −)</b>", _table(energy, ["class", "kWh"]), "</div>"]
        if worst_rows:
            out += ["<div><b>Worst buses</b>", _table(worst_rows, ["bus", "min (pu)", "max (pu)",
                                                                     "minutes outside limits"]), "</div>"]
        out.append("</div>")
        groups = s.get("groups") or {}
        if groups:
            keys = [k for k in dict.fromkeys(k for g in groups.values() for k in g) if k != "kind"]
            rows = [[g, kp.get("kind", "")] + [kp.get(k) for k in keys] for g, kp in groups.items()]
            out += ["<h2>Fleet groups</h2>", _table(rows, ["group", "kind"] + [_label(k) for k in keys])]
        dr = s.get("dr") or {}
        if dr:
            keys = ["status", "requested_kw", "delivered_kw", "delivery_pct", "assessed_delivered_kw",
                    "assessed_delivery_pct", "meter_delivered_kw", "baseline_method", "cycles"]
            rows = [[e] + [r.get(k) for k in keys] for e, r in dr.items()]
            out += ["<h2>Demand response</h2>", _table(rows, ["event"] + [_label(k) for k in keys])]
        ctl = s.get("controller")
        if isinstance(ctl, dict):
            out += ["<h2>Controller</h2>", _table([[_label(k), x] for k, x in ctl.items()])]
        asserts = s.get("assertions") or []
        out.append(f"<h2>Assertions ({sum(a['passed'] for a in asserts)} passed, "
                   f"{sum(not a['passed'] for a in asserts)} failed)</h2>")
        if asserts:
            rows = [[a["kpi"], f"{a['op']} {a['value']:g}", a["actual"],
                     ("html", "<span class='ok'>passed</span>" if a["passed"] else "<span class='bad'>FAILED</span>")]
                    for a in asserts]
            out.append(_table(rows, ["KPI", "must be", "actual", "result"]))
        else:
            out.append("<p class='note'>this scenario has no assertions</p>")
        other = {k: x for k, x in s.items() if k not in ("scenario", "start", "duration_s", "wall_s", "speedup",
                                                         "voltage", "loading", "head", "violations", "faults",
                                                         "energy_kwh", "groups", "dr", "controller", "assertions",
                                                         "device_steps", "power_flows")}
        if other:
            rows = [[k, json.dumps(x, default=str)[:300] if isinstance(x, (dict, list)) else x]
                    for k, x in other.items()]
            out += ["<h2>Other KPIs</h2>", _table(rows)]
        return "".join(out)


def _label(k: str) -> str:
    u = unit_of(k)
    base = k
    for suf in sorted(UNITS, key=len, reverse=True):
        if k.endswith("_" + suf):
            base = k[: -len(suf) - 1]
            break
    return f"{base.replace('_', ' ')} ({u})" if u else k.replace("_", " ")


def write_report(path, df: pd.DataFrame, summary: dict, bus_names: dict[str, str] | None = None,
                 limits: dict | None = None, events: list[dict] | None = None) -> None:
    """Write report.html for one run. `bus_names` maps 'bus17' -> the feeder's name for it;
    events default to events.jsonl beside `path`."""
    from plotly.io import to_html

    path = Path(path)
    if events is None:
        ev = path.parent / "events.jsonl"
        events = [json.loads(x) for x in ev.read_text().splitlines() if x.strip()] if ev.exists() else []
    rep = _Report(df, summary, bus_names or {}, dict(limits or {}), events)
    worst = rep.voltage()
    rep.head()
    rep.violations()
    rep.dr()
    rep.classes()
    figs = []
    for key, fig in rep.figs:
        figs.append(f"<div id='fig-{html.escape(key)}' class='fig'>"
                    + to_html(fig, include_plotlyjs=False, full_html=False,
                              config={"displaylogo": False, "responsive": True}, div_id=f"plot-{key}")
                    + "</div>")
    s = summary
    asserts = s.get("assertions") or []
    failed = sum(not a["passed"] for a in asserts)
    verdict = (f"<span class='bad'>{failed} of {len(asserts)} assertions FAILED</span>" if failed else
               (f"<span class='ok'>all {len(asserts)} assertions passed</span>" if asserts else "no assertions"))
    note = ""
    if rep.bins is not None:
        note = (f"<p class='note'>{len(df):,} samples binned to {MAX_POINTS} points per trace "
                "(means; band minima/maxima kept).</p>")
    src = plotly_js(path.parent)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(s['scenario'])} · gridtwin"
            f"</title><style>{CSS}</style><script src='{src}'></script></head><body>"
            f"<h1>gridtwin run: {html.escape(s['scenario'])}</h1>"
            f"<div class='sub'>start {html.escape(str(s.get('start', '')))} UTC · "
            f"{s.get('duration_s', 0) / 3600:g} h simulated · {verdict} · folder {html.escape(path.parent.name)}"
            f"</div><p class='note'>Shading: DR events in cyan, intervals with limit violations in red. "
            f"All times UTC.</p>"
            f"<h2>Key figures</h2>{rep.kpi_tables(worst)}{note}<h2>Figures</h2>{''.join(figs)}"
            f"<p class='note'>plotly.js is loaded from {html.escape(src)} (written once beside the run folders)."
            f"</p></body></html>")
    path.write_text(page)


def end_of_run_lines(summary: dict, out) -> list[str]:
    """What `gridtwin run` prints when a run ends: the headline, energy by class, DR delivery
    per event and the assertion count (failed assertions are printed by the caller)."""
    v = summary["voltage"]
    asserts = summary.get("assertions") or []
    n_fail = sum(not a["passed"] for a in asserts)

    def f(x, nd=3):
        return "n/a" if x is None else f"{x:.{nd}f}"

    lines = [(f"{summary['scenario']}: {h_mm(summary['duration_s'])} simulated in "
              f"{summary['wall_s']:.1f} s (x{summary['speedup']}), v {f(v['min_pu'])}..{f(v['max_pu'])} pu, "
              f"violation minutes {summary['violations']['minutes']:g}; results in {out}")]
    energy = summary.get("energy_kwh") or {}
    if energy:
        lines.append("  energy (kWh, load +): " + ", ".join(f"{k.replace('_', ' ')} {x:,.1f}"
                                                           for k, x in energy.items()))
    for eid, d in (summary.get("dr") or {}).items():
        dl = d.get("assessed_delivered_kw", d.get("delivered_kw"))
        pct = d.get("assessed_delivery_pct", d.get("delivery_pct"))
        lines.append(f"  DR {eid}: {f(dl, 1)} of {f(d.get('requested_kw'), 1)} kW delivered"
                     + (f" ({pct:.0f} %)" if isinstance(pct, (int, float)) else "") + f", {d.get('status', '')}")
    lines.append(f"  assertions: {len(asserts) - n_fail} passed, {n_fail} failed" if asserts
                 else "  assertions: none in this scenario")
    if (Path(out) / "report.html").exists():
        lines.append(f"  report: {Path(out) / 'report.html'}")
    return lines
