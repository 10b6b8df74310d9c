"""Volt/VAR OLTC and capacitor steps in the live cycle (in-process controller, hil.direct): an
LV feeder whose transformer has an on-load tap changer (+-4 x 2.5 %) and whose far end has a
two-step capacitor bank sinks below 0.95 pu in the evening; the inverters' vars cannot hold
it. The volt/VAR source steps the tap (and later the capacitor) through the RTU view, the
gate checks each step in an AC power flow, and the feeder returns into the band, with no step
taken back (no hunting), at least `step_delay_s` between two steps of one element. Reactive setpoints go only to
inverters whose link says it can write them (`DeviceLink.writable`)."""

import warnings

import numpy as np
import pandapower as pp
import pytest

from controller.commands import Command
from hil.direct import attach_controller
from scenarios.model import Scenario
from twin.simulation import Twin

SCALE, ARRIVAL_H = 0.85, 17.2  # far end at 0.949 pu at 17:00; three 11 kW cars plug in there at 17:12
LIMITS = {"v_min_pu": 0.95, "v_max_pu": 1.05, "line_loading_max_pct": 100, "trafo_loading_max_pct": 100}


def oltc_feeder(path) -> None:
    """20 kV head, 0.4 MVA transformer with a tap changer on its HV side, six LV buses in a line
    with 25 kW each (nominal), a capacitor bank (2 x 20 kvar) at the far end."""
    net = pp.create_empty_network()
    mv = pp.create_bus(net, 20.0, name="MV")
    pp.create_ext_grid(net, mv, vm_pu=1.0)
    lv = [pp.create_bus(net, 0.4, name=f"LV{k}") for k in range(7)]
    t = pp.create_transformer(net, mv, lv[0], std_type="0.4 MVA 20/0.4 kV", name="OLTC")
    net.trafo.loc[t, ["tap_pos", "tap_neutral", "tap_min", "tap_max", "tap_step_percent", "tap_side",
                      "tap_changer_type"]] = [0, 0, -4, 4, 2.5, "hv", "Ratio"]
    for a, b in zip(lv[:-1], lv[1:]):
        pp.create_line(net, a, b, 0.08, std_type="NAYY 4x150 SE")
    for b in lv[1:]:
        pp.create_load(net, b, p_mw=0.025, q_mvar=0.008)
    pp.create_shunt(net, lv[-1], q_mvar=-0.02, p_mw=0.0, step=0, max_step=2, name="capacitor")
    pp.to_json(net, str(path))


def _run(path, controller: bool):
    s = Scenario.model_validate(dict(
        name="oltc_evening", start="2026-01-15T17:00:00Z", duration_s=1800, seed=3, device_step_s=60,
        power_flow_interval_s=60,
        feeder={"kind": "pandapower_json", "path": str(path), "limits": LIMITS, "base_load_scale": SCALE},
        fleet=[{"name": "pv", "kind": "pv", "count": 2, "placement": {"rule": "buses", "buses": [6, 7]},
                "params": {"p_peak_kw": 2, "s_rated_kva": 2}},
               {"name": "old_pv", "kind": "pv", "count": 2, "placement": {"rule": "buses", "buses": [5, 6]},
                "params": {"p_peak_kw": 2, "s_rated_kva": 2}},
               {"name": "ev", "kind": "ev", "count": 3, "placement": {"rule": "buses", "buses": [7]},
                "params": {"p_max_kw": 11, "arrival_h_mean": ARRIVAL_H, "arrival_h_std": 0.0}}],
        base_load={"profile": "residential", "noise_pct": 0},
        controller={"enabled": controller, "cycle_s": 60, "objective": "dr"}, outputs={"report": False}))
    tw = Twin(s)
    att = attach_controller(tw) if controller else None
    if att is not None:  # the old inverters' link offers no reactive setpoint (DeviceLink.writable)
        att.link.port.setpoints = lambda: {"pv": ["p_limit_pct", "q_set_kvar"], "old_pv": ["p_limit_pct"]}
    v_min = []
    tw.after_step.append(lambda w: v_min.append(float(w.grid.result.v_pu.min())))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tw.run()
    return tw, att and att.controller, np.array(v_min)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    path = tmp_path_factory.mktemp("oltc") / "oltc_feeder.json"
    oltc_feeder(path)
    return _run(path, False), _run(path, True)


def test_reactive_setpoints_only_where_the_link_can_write_them(runs):
    _, (tw, c, _) = runs
    q = [r for r in c.hist.query("setpoints", limit=10_000) if r["setpoint"] == "q_set_kvar"]
    assert {r["device_id"].split("/")[0] for r in q} == {"pv"} and all(r["ok"] for r in q)
    assert not any(k[0].startswith("old_pv") for k in c.io.write_failures)
    assert abs(tw.fleets["pv"].q_kvar).sum() > 0 and not abs(tw.fleets["old_pv"].q_kvar).any()


def test_tap_and_capacitor_steps_bring_the_feeder_back_into_band(runs):
    (tw0, _, v0), (tw, c, v) = runs
    # without the controller the far end stays below the band the whole half hour
    assert tw0.violation_intervals == len(v0) == 30 and v0.max() < 0.95
    src = next(x for x in c.sources if x.name == "volt_var")
    steps = src.steps
    # with it: out of band at the start and when the cars plug in, each time back in band at
    # the next power flow, after one step
    out = np.flatnonzero(v < 0.95)
    assert len(out) <= 2 and not np.any(np.diff(out) == 1), (v.round(4), steps)
    assert v.max() <= 1.05
    sent = [r for r in c.hist.query("setpoints", limit=10_000) if r["source"] == "volt_var"
            and r["setpoint"] in ("tap_pos", "step")]
    assert [(r["device_id"], r["value"]) for r in sent] == [(s["device_id"], s["value"]) for s in steps]
    assert all(r["ok"] for r in sent)  # the RTU confirmed every step
    # the capacitor first (one step is enough at 17:00), the tap when the cars plug in (a
    # capacitor step would not do)
    assert (steps[0]["device_id"], steps[0]["value"]) == ("rtu/cap0", 1.0), steps
    tap = [s for s in steps if s["device_id"] == "rtu/trafo0"]
    assert [s["value"] for s in tap] == [-1.0] and tap[0]["t"] >= c.clock.now() - 1800 + 11 * 60, steps
    assert tw.net.trafo.tap_pos.iloc[0] == -1 and tw.net.shunt.step.iloc[0] >= 1
    # no hunting: each element moves one way only, one step at a time, at least step_delay_s apart
    for dev in {s["device_id"] for s in steps}:
        vals = [s["value"] for s in steps if s["device_id"] == dev]
        assert np.all(np.diff(vals) * np.sign(vals[-1] - vals[0]) >= 0)
        t = np.array([s["t"] for s in steps if s["device_id"] == dev])
        assert np.all(np.diff(t) >= src.step_delay_s)
    assert len({s["t"] for s in steps}) == len(steps)  # one step per cycle
    # tap limits: the gate refuses a position outside tap_min..tap_max and a jump of two
    snap = c.snapshot_fn(c.state)
    assert snap.trafo_tap_pos == {0: -1.0} and snap.shunt_step == {0: tw.net.shunt.step.iloc[0]}
    res = c.gate.check([Command("rtu/trafo0", "tap_pos", -3.0), Command("rtu/cap0", "step", 3.0)], snap)
    assert [d.reasons for d in res.decisions] == [["ramp_limit"], ["device_limit"]]
