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
    assert ids == {"act-dr-create", "act-shed", "act-restore"}  # row actions live on the rows


FLEET = {"margin": {"margin_kw": 90.0, "battery_kw": 40.0, "battery_hold_s": 3600},
         "emergency": {"since": 1.78e9, "by": "olivia", "reason": "x", "shed_kw": 120.0, "hold_s": 1800}}


@pytest.mark.parametrize("trigger,values,ok", [
    ("act-dr-create", {"start": 1, "dur": 15, "kw": 50, "groups": "bat, ev"}, True),
    ("act-dr-create", {"start": 1, "dur": 15, "kw": 0, "groups": ""}, False),
    ("live-devices", {"row": {"device_id": "pv/4", "in_service": "yes"}}, True),
    ("live-dr-table", {"row": {"id": "e1", "status": "completed"}}, False),  # nothing to cancel
    ("live-dr-table", {"row": {"id": "e1", "status": "pending"}}, True),
    ("live-alarms", {"row": {"id": "7", "acknowledged": "yes"}}, False),
    ("act-restore", {}, True),
])
def test_actions_are_validated_before_confirmation(trigger, values, ok):
    v = {**dict.fromkeys(["start", "dur", "kw", "groups", "row"]), **values}
    action, text = describe_action(trigger, v, FLEET)
    assert (action is not None) == ok
    if trigger == "act-dr-create" and ok:
        assert action["groups"] == ["bat", "ev"] and action["reduction_kw"] == 50.0
        assert "WARNING" not in text  # 50 kW fits the 90 kW margin


def test_dr_request_beyond_margin_warns_with_expected_delivery():
    _, text = describe_action("act-dr-create", {"start": 1, "dur": 15, "kw": 500, "groups": ""}, FLEET)
    assert text.startswith("WARNING: 500 kW is more than the available reduction margin of 90.0 kW")
    assert "about 18 % delivery" in text
    assert describe_action("act-restore", {}, {"emergency": None})[0] is None


def test_pending_event_reads_pending_and_under_delivery_is_flagged():
    rows = {r["id"]: r for r in ld.dr_rows([
        {"id": "p", "status": "pending", "start_t": 1.78e9, "end_t": 1.78e9 + 600, "reduction_kw": 5,
         "delivered_kw": 0.0, "delivery_pct": 0.0},
        {"id": "u", "status": "active", "start_t": 1.0, "end_t": 2.0, "reduction_kw": 500, "delivered_kw": 69.5}])}
    assert rows["p"]["delivered_kw"] == "pending" and rows["p"]["note"].startswith("starts ")
    assert rows["u"]["note"] == "UNDER-DELIVERING: 14 % of the request"
    fig = ld.dr_figure(list(rows.values()))
    assert any(t.startswith("pending, starts") for t in fig["data"][1]["text"])


def test_fleet_rows_leave_out_meter_and_rtu_and_audit_detail_is_readable():
    rows = ld.fleet_rows({"groups": {"bat": {"kind": "battery", "p_kw": 1.0, "soc_pct": 50.0},
                                     "meter": {"kind": "meter", "p_kw": 200.0, "telemetry_only": True},
                                     "rtu": {"kind": "rtu", "p_kw": 0.0}}})
    assert [r["group"] for r in rows] == ["bat"]
    d = ld.audit_detail({"start_t": 1768492800.0, "reduction_kw": 6.5, "groups": ["a", "b"], "id": None})
    assert d == "start=2026-01-15 16:00:00 UTC, reduction_kw=6.5, groups=a,b"


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


def test_one_line_joins_switches_marks_transformers_and_names_buses():
    grid = {"root_bus": 0,
            "buses": [{"id": 0, "name": "Bus 0", "v_pu": 1.0}, {"id": 1, "name": "Bus R0", "v_pu": 1.0},
                      {"id": 2, "name": "Bus R1", "v_pu": 0.99}],
            "switches": [{"from_bus": 0, "to_bus": 1, "name": "S1", "closed": True}],
            "trafos": [{"hv_bus": 1, "lv_bus": 2, "name": "Trafo R0-R1", "loading_pct": 40.0}]}
    fig = one_line_figure(grid)
    buses = next(t for t in fig["data"] if t["name"] == "bus voltage")
    assert buses["x"] == [0.0, 1.0, 2.0]  # bus 0 joined through its switch, not floating alone
    assert buses["texttemplate"] == ["0", "R0", "R1"]
    tr = next(t for t in fig["data"] if t["name"] == "transformer")
    assert tr["text"] == ["Trafo R0-R1: 40.0 %"] and tr["x"] == [1.5]
    assert fig["layout"]["legend"]["y"] < 0  # legend below the diagram, clear of the title


def test_one_line_marks_der_next_to_their_buses():
    grid = {"root_bus": 0, "buses": [{"id": 0, "v_pu": 1.0}, {"id": 1, "v_pu": 1.0}],
            "lines": [{"from_bus": 0, "to_bus": 1, "loading_pct": 10.0, "name": "L1"}],
            "der": [{"bus": 1, "kind": "pv", "n": 3, "p_kw": -12.5}, {"bus": 1, "kind": "battery", "n": 1, "p_kw": 2.0},
                    {"bus": 7, "kind": "ev", "n": 1, "p_kw": 3.0}]}  # bus 7 is not drawn: no marker
    fig = one_line_figure(grid)
    pv = next(t for t in fig["data"] if t["name"] == "pv")
    bat = next(t for t in fig["data"] if t["name"] == "battery")
    assert pv["text"] == ["pv at bus 1: 3 devices, -12.5 kW (load +)"]
    assert bat["text"] == ["battery at bus 1: 1 device, 2.0 kW (load +)"]
    assert not any(t["name"] == "ev" for t in fig["data"])
    buses = next(t for t in fig["data"] if t["name"] == "bus voltage")
    assert (pv["x"][0], pv["y"][0]) != (buses["x"][1], buses["y"][1])  # set off from the bus
