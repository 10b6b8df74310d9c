"""Feeder one-line: bus positions (API geodata, else a deterministic BFS layering from the
feeder head) and a Plotly figure with buses coloured by voltage and branches by loading.

Branches are drawn as one SVG trace per loading band (not one per branch) so a 100-bus
feeder stays a handful of traces and redraws cheaply every second.
"""

from __future__ import annotations

from collections import deque

from dashboard.figures import base_layout

# loading bands (upper bound %, colour, label); last band catches overloads
LOADING_BANDS = [(50.0, "#2ca02c", "< 50 %"), (80.0, "#bcbd22", "50–80 %"),
                 (100.0, "#ff7f0e", "80–100 %"), (float("inf"), "#d62728", "> 100 %")]


def bfs_positions(bus_ids: list[int], edges: list[tuple[int, int]], root: int | None = None
                  ) -> dict[int, tuple[float, float]]:
    """x = hops from `root` (the feeder head), y = leaf-ordered slot so subtrees stay together.

    Deterministic for a given topology; meshed feeders are laid out by their BFS tree and
    islands (buses not connected to the root) are stacked below it."""
    adj: dict[int, list[int]] = {b: [] for b in bus_ids}
    for a, b in edges:
        if a in adj and b in adj:
            adj[a].append(b)
            adj[b].append(a)
    for nbrs in adj.values():
        nbrs.sort()
    pos: dict[int, tuple[float, float]] = {}
    next_y = [0.0]
    roots = ([root] if root in adj else []) + sorted(adj)
    for r in roots:
        if r in pos:
            continue
        depth = {r: 0}
        children: dict[int, list[int]] = {r: []}
        order = [r]
        q = deque([r])
        while q:
            u = q.popleft()
            for v in adj[u]:
                if v not in depth:
                    depth[v] = depth[u] + 1
                    children[u].append(v)
                    children[v] = []
                    order.append(v)
                    q.append(v)
        # leaves take consecutive slots; a parent sits at the mean of its children
        ys: dict[int, float] = {}
        stack = [(r, False)]
        while stack:
            u, done = stack.pop()
            if done or not children[u]:
                if children[u]:
                    ys[u] = sum(ys[c] for c in children[u]) / len(children[u])
                else:
                    ys[u] = next_y[0]
                    next_y[0] += 1.0
                continue
            stack.append((u, True))
            for c in reversed(children[u]):
                stack.append((c, False))
        for u in order:
            pos[u] = (float(depth[u]), -ys[u])
    return pos


def positions(grid: dict) -> dict[int, tuple[float, float]]:
    buses = grid.get("buses", [])
    if buses and all(b.get("x") is not None and b.get("y") is not None for b in buses):
        return {int(b["id"]): (float(b["x"]), float(b["y"])) for b in buses}
    edges = [(int(br["from_bus"]), int(br["to_bus"])) for br in branches(grid)]
    return bfs_positions([int(b["id"]) for b in buses], edges, grid.get("root_bus"))


def branches(grid: dict, switches: bool = True) -> list[dict]:
    """Lines and transformers alike: from_bus, to_bus, loading_pct, name; closed bus-bus
    switches too (they join e.g. CIGRE LV's source bus to its transformers)."""
    out = list(grid.get("lines", []))
    for t in grid.get("trafos", []):
        out.append({"from_bus": t.get("hv_bus", t.get("from_bus")), "to_bus": t.get("lv_bus", t.get("to_bus")),
                    "loading_pct": t.get("loading_pct"), "name": t.get("name", "trafo"), "trafo": True})
    if switches:
        for sw in grid.get("switches", []):
            if sw.get("closed", True):
                out.append({"from_bus": sw["from_bus"], "to_bus": sw["to_bus"], "loading_pct": None,
                            "name": sw.get("name", "switch"), "switch": True})
    return out


def one_line_figure(grid: dict, v_min_pu: float = 0.95, v_max_pu: float = 1.05) -> dict:
    """Plotly figure as a plain dict (no graph_objects validation: ~100x cheaper per refresh)."""
    pos = positions(grid)
    data = []
    bands: list[tuple[list, list, list]] = [([], [], []) for _ in LOADING_BANDS]
    sw_x, sw_y, tr_x, tr_y, tr_txt = [], [], [], [], []
    for br in branches(grid):
        a, b = pos.get(int(br["from_bus"])), pos.get(int(br["to_bus"]))
        if a is None or b is None:
            continue
        if br.get("switch"):
            sw_x += [a[0], b[0], None]
            sw_y += [a[1], b[1], None]
            continue
        if br.get("trafo"):
            tr_x.append((a[0] + b[0]) / 2)
            tr_y.append((a[1] + b[1]) / 2)
            ld = br.get("loading_pct")
            tr_txt.append(f"{br.get('name', 'trafo')}: " + (f"{ld:.1f} %" if ld is not None else "n/a"))
        load = br.get("loading_pct")
        k = next(i for i, (hi, _, _) in enumerate(LOADING_BANDS) if load is None or load < hi)
        xs, ys, txt = bands[k]
        xs += [a[0], b[0], None]
        ys += [a[1], b[1], None]
        label = f"{br.get('name', '')}: {load:.1f} %" if load is not None else f"{br.get('name', '')}: n/a"
        txt += [label, label, None]
    for (hi, colour, label), (xs, ys, txt) in zip(LOADING_BANDS, bands):
        data.append({"type": "scatter", "x": xs, "y": ys, "mode": "lines", "line": {"color": colour, "width": 3},
                         "name": f"loading {label}", "text": txt, "hoverinfo": "text", "showlegend": bool(xs)})
    if sw_x:
        data.append({"type": "scatter", "x": sw_x, "y": sw_y, "mode": "lines", "name": "switch (closed)",
                     "line": {"color": "#999", "width": 1.5, "dash": "dot"}, "hoverinfo": "skip"})
    if tr_x:
        data.append({"type": "scatter", "x": tr_x, "y": tr_y, "mode": "markers", "name": "transformer",
                     "marker": {"symbol": "circle-open-dot", "size": 16, "color": "#444", "line": {"width": 2}},
                     "text": tr_txt, "hoverinfo": "text"})
    buses = [b for b in grid.get("buses", []) if int(b["id"]) in pos]
    ids = [int(b["id"]) for b in buses]
    v = [b.get("v_pu") for b in buses]
    data.append({
        "type": "scatter", "x": [pos[i][0] for i in ids], "y": [pos[i][1] for i in ids], "mode": "markers+text",
        "textposition": "top center", "textfont": {"size": 8, "color": "#555"},
        "texttemplate": [_short(b.get("name"), i) for i, b in zip(ids, buses)],
        "name": "bus voltage", "showlegend": False,
        "marker": {"size": 13, "color": [x if x is not None else 1.0 for x in v],
                    "colorscale": [[0, "#3b4cc0"], [0.5, "#dddddd"], [1, "#b40426"]],
                    "cmin": v_min_pu - 0.02, "cmax": v_max_pu + 0.02, "line": {"width": 1, "color": "#333"},
                    "colorbar": {"title": {"text": "V (pu)"}, "thickness": 12}},
        "text": [f"bus {i} {b.get('name', '')}: {x:.4f} pu" if x is not None else f"bus {i}: n/a"
              for i, b, x in zip(ids, buses, v)],
        "hoverinfo": "text"})
    data += _der_markers(grid.get("der") or [], pos)
    layout = base_layout(400, _title(v), margin={"t": 30, "l": 10, "r": 10, "b": 40},
                         xaxis={"visible": False}, yaxis={"visible": False},
                         legend={"orientation": "h", "x": 0, "y": -0.02, "yanchor": "top"}, uirevision="one-line")
    return {"data": data, "layout": layout}


# one marker per device kind, set off from its bus so bus and DER stay readable
DER_STYLE = {"pv": ("triangle-up", "#e6a700", (-0.18, 0.22)), "battery": ("square", "#2a9d8f", (0.18, 0.22)),
             "ev": ("diamond", "#6a4c93", (-0.18, -0.22)), "flex_load": ("cross", "#8d6e63", (0.18, -0.22)),
             "tcl": ("star", "#1d70b8", (0.0, -0.3))}


def _der_markers(der: list[dict], pos: dict) -> list[dict]:
    """Managed DER per bus (from /api/grid 'der'): a marker per kind next to its bus, hover
    with the device count and summed P."""
    traces = []
    for kind, (symbol, colour, (dx, dy)) in DER_STYLE.items():
        rows = [r for r in der if r.get("kind") == kind and int(r["bus"]) in pos]
        if not rows:
            continue
        traces.append({"type": "scatter", "mode": "markers", "name": kind.replace("_", " "),
                       "x": [pos[int(r["bus"])][0] + dx for r in rows],
                       "y": [pos[int(r["bus"])][1] + dy for r in rows],
                       "marker": {"symbol": symbol, "size": 9, "color": colour},
                       "text": [f"{kind} at bus {r['bus']}: {r['n']} device{'s' if r['n'] != 1 else ''}, "
                                f"{r['p_kw']:.1f} kW (load +)" for r in rows],
                       "hoverinfo": "text"})
    return traces


def _short(name, i) -> str:
    """Bus label on the diagram: the feeder's own name without a leading 'Bus '."""
    n = str(name or i)
    return n[4:] if n.lower().startswith("bus ") else n


def _title(v: list) -> str:
    good = [x for x in v if x is not None]
    if not good:
        return "feeder (no voltages)"
    return f"feeder: V min {min(good):.3f} pu, max {max(good):.3f} pu"
