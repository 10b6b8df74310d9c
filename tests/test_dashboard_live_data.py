"""Live-view building blocks without a browser: one-line layout and colouring, DR/device rows,
action validation, and the viewer's action panel holding no buttons."""

import pytest
from dash import html

from dashboard import live_data as ld
from dashboard.live_view import actions_panel, describe_action
from dashboard.one_line import LOADING_BANDS, bfs_positions, one_line_figure


def _walk(c):
    yield c
    kids = getattr(c, "children", None)
    if isinstance(kids, (list, tuple)):
        for k in kids:
            yield from _walk(k)
    elif kids is not None and not isinstance(kids, (str, int, float)):
        yield from _walk(kids)


def test_bfs_layering_is_hops_from_head_and_deterministic():
    edges = [(0, 1), (1, 2), (1, 3), (3, 4), (4, 5), (2, 6)]
    pos = bfs_positions([6, 5, 4, 3, 2, 1, 0, 9], edges, root=0)
    assert [pos[b][0] for b in range(7)] == [0, 1, 2, 2, 3, 4, 3]
    assert pos == bfs_positions(list(range(7)) + [9], list(reversed(edges)), root=0)
    assert len({pos[b] for b in pos}) == len(pos)  # no two buses on one spot
    assert pos[9][1] < min(pos[b][1] for b in range(7))  # island stacked below the tree


def test_one_line_colours_buses_by_voltage_and_lines_by_loading_band():
    grid = {"root_bus": 0,
            "buses": [{"id": 0, "v_pu": 1.02}, {"id": 1, "v_pu": 0.99}, {"id": 2, "v_pu": 1.061}],
            "lines": [{"from_bus": 0, "to_bus": 1, "loading_pct": 30.0, "name": "L1"},
                      {"from_bus": 1, "to_bus": 2, "loading_pct": 112.0, "name": "L2"}]}
    fig = one_line_figure(grid)
    bands = {t["name"]: t for t in fig["data"] if t["name"].startswith("loading")}
    green, red = bands[f"loading {LOADING_BANDS[0][2]}"], bands[f"loading {LOADING_BANDS[-1][2]}"]
    assert green["text"] == ["L1: 30.0 %", "L1: 30.0 %", None]
    assert red["text"] == ["L2: 112.0 %", "L2: 112.0 %", None]
    buses = next(t for t in fig["data"] if t["name"] == "bus voltage")
    assert buses["marker"]["color"] == [1.02, 0.99, 1.061]
    assert "max 1.061 pu" in fig["layout"]["title"]["text"]
    import plotly.graph_objects as go

    go.Figure(fig)  # the plain dict is a valid Plotly figure


def test_geodata_positions_win_over_layout():
    grid = {"buses": [{"id": 0, "x": 5.0, "y": 7.0, "v_pu": 1.0}, {"id": 1, "x": 6.0, "y": 7.5, "v_pu": 1.0}],
            "lines": [{"from_bus": 0, "to_bus": 1, "loading_pct": 10}]}
    buses = next(t for t in one_line_figure(grid)["data"] if t["name"] == "bus voltage")
    assert buses["x"] == [5.0, 6.0] and buses["y"] == [7.0, 7.5]


def test_dr_rows_compute_delivery_and_put_active_first():
    rows = ld.dr_rows([
        {"id": "old", "status": "completed", "start_t": 1.0, "end_t": 2.0, "reduction_kw": 10, "delivered_kw": 9.6},
        {"id": "now", "status": "active", "start_t": 5.0, "end_t": 9.0, "reduction_kw": 40,
         "performance": {"delivered_kw": 30.0}},
    ])
    assert [r["id"] for r in rows] == ["now", "old"]
    assert rows[0]["delivery_pct"] == 75.0 and rows[1]["delivery_pct"] == 96.0


def test_fleet_and_dr_figures_are_valid_plotly():
    import plotly.graph_objects as go

    rows = ld.fleet_rows({"t": 0, "groups": {"bat": {"kind": "battery", "count": 4, "usable": 3, "p_kw": -8.0,
                                                     "soc_pct": 55.0}}})
    fig = go.Figure(ld.fleet_figure(rows))
    assert list(fig.data[1].y) == [55.0, 75.0]  # SOC, usable share
    go.Figure(ld.dr_figure(ld.dr_rows([{"id": "a", "status": "active", "reduction_kw": 5, "delivered_kw": 4}])))
    go.Figure(ld.head_figure({"t": [0, 60], "p_kw": [1, 2], "q_kvar": [0, 0], "schedule_p_kw": [1, 1]}))


def test_head_history_deduplicates_on_controller_time():
    h = ld.HeadHistory(maxlen=3)
    for t, p in [(1, 10.0), (1, 11.0), (2, 12.0), (3, 13.0), (4, 14.0)]:
        ld.head_series({"t": t, "p_kw": p}, h)
    assert list(h.t) == [2, 3, 4] and list(h.p) == [12.0, 13.0, 14.0]


def test_device_rows_report_total_for_paging():
    rows, total = ld.device_rows({"total": 1000, "items": [
        {"device_id": "pv/3", "kind": "pv", "available": False, "reason": "timeout", "in_service": True}]})
    assert total == 1000 and rows[0]["available"] == "no" and rows[0]["reason"] == "timeout"


def test_viewer_gets_no_buttons_operator_gets_all():
    assert not [c for c in _walk(actions_panel("viewer")) if isinstance(c, html.Button)]
    ids = {c.id for c in _walk(actions_panel("operator")) if isinstance(c, html.Button)}
    assert ids == {"act-dr-create", "act-dr-cancel", "act-alarm-ack", "act-dev-oos", "act-shed"}


@pytest.mark.parametrize("trigger,values,ok", [
    ("act-dr-create", {"start": 1, "dur": 15, "kw": 50, "groups": "bat, ev"}, True),
    ("act-dr-create", {"start": 1, "dur": 15, "kw": 0, "groups": ""}, False),
    ("act-dev-oos", {"dev_id": "pv"}, False),
    ("act-dev-oos", {"dev_id": "pv/4"}, True),
    ("act-dr-cancel", {"cancel_id": ""}, False),
])
def test_actions_are_validated_before_confirmation(trigger, values, ok):
    v = {**dict.fromkeys(["start", "dur", "kw", "groups", "cancel_id", "alarm_id", "dev_id"]),
         **values}
    action, text = describe_action(trigger, v)
    assert (action is not None) == ok and text
    if trigger == "act-dr-create" and ok:
        assert action["groups"] == ["bat", "ev"] and action["reduction_kw"] == 50.0


def test_one_line_of_cigre_lv_from_its_topology():
    """The payload the dashboard expects from GET /api/grid, built here from a real feeder."""
    import pandapower as pp
    import pandapower.networks as pn

    net = pn.create_cigre_network_lv()
    pp.runpp(net)
    grid = {"root_bus": int(net.ext_grid.bus.iloc[0]),
            "buses": [{"id": int(b), "name": net.bus.name[b], "v_pu": float(net.res_bus.vm_pu[b])}
                      for b in net.bus.index],
            "lines": [{"from_bus": int(r.from_bus), "to_bus": int(r.to_bus), "name": r["name"],
                       "loading_pct": float(net.res_line.loading_percent[i])} for i, r in net.line.iterrows()],
            "trafos": [{"hv_bus": int(r.hv_bus), "lv_bus": int(r.lv_bus), "name": r["name"],
                        "loading_pct": float(net.res_trafo.loading_percent[i])} for i, r in net.trafo.iterrows()]}
    fig = one_line_figure(grid)
    buses = next(t for t in fig["data"] if t["name"] == "bus voltage")
    assert len(buses["x"]) == len(net.bus)
    assert len(set(zip(buses["x"], buses["y"]))) == len(net.bus)  # every bus on its own spot
    drawn = sum(len(t["x"]) // 3 for t in fig["data"] if t["name"].startswith("loading"))
    assert drawn == len(net.line) + len(net.trafo)
    assert min(buses["marker"]["color"]) == pytest.approx(net.res_bus.vm_pu.min())
