"""Data quality (issue 17) over emulated SunSpec devices on 127.0.0.1: a frozen head meter
(`freeze`) and a mis-scaled PV inverter (`wrong_scale`) are flagged `suspect` within 3 polls,
raise one alarm naming device and check, and their values leave dispatch (GroupState.get)
and the historian's good values; clean devices on a 10 s power-flow feeder raise nothing."""

import numpy as np
import pytest

from controller.clock import SteppedClock
from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.links.modbus import ModbusLink
from controller.quality import DataQuality
from controller.state import Q_SUSPECT
from device_emulators import EmulatorHost
from device_emulators.faults import clear, inject
from scenarios.model import Scenario
from twin.simulation import Twin


@pytest.fixture(scope="module")
def rig():
    tw = Twin(Scenario.model_validate(dict(
        name="dq", start="2026-06-21T11:00:00Z", duration_s=600, seed=3, device_step_s=1,
        power_flow_interval_s=10, feeder={"kind": "cigre_lv"},
        fleet=[{"name": "pv", "kind": "pv", "count": 2, "params": {"p_peak_kw": 20, "s_rated_kva": 25}},
               {"name": "bat", "kind": "battery", "count": 1,
                "params": {"e_cap_kwh": 20, "p_max_kw": 10, "soc_init_pct": 60}}],
        weather={"kind": "synthetic", "latitude_deg": 48.1, "longitude_deg": 11.6, "cloudiness": 0.0},
        outputs={"report": False})))
    host = EmulatorHost(tw, rtu=False)
    rows = host.start()
    t0 = tw.scenario.start.timestamp()
    clock = SteppedClock(t0)
    link = ModbusLink([r for r in rows if r["protocol"] == "modbus"], clock, timeout_s=1.0, poll_s=1.0)
    ctl = Controller({g: link for g in ("pv", "bat", "meter")}, clock, gate=PassThroughGate(),
                     settings=CycleSettings(cycle_s=1.0, telemetry_every_s=1.0))
    state = {"t": 0.0}

    def poll(n=1):
        for _ in range(n):
            state["t"] += 1.0
            host.step(state["t"])
            clock.advance_to(t0 + state["t"])
            ctl.cycle(t0 + state["t"])

    yield ctl, host, poll
    link.close()
    host.stop()


def suspect(ctl, dev):
    return [a for a in ctl.hist.alarms(active_only=True) if a["kind"] == "data_suspect" and a["device_id"] == dev]


def test_clean_fleet_raises_nothing(rig):
    ctl, host, poll = rig
    poll(25)  # two and a half power-flow intervals: the meter's P steps every 10 s
    assert [a for a in ctl.hist.alarms() if a["kind"] == "data_suspect"] == []
    m = ctl.state.groups["meter"]
    assert np.isfinite(m.get("p_kw")[0]) and m.values["e_imp_kwh"][0] > 0
    assert abs(ctl.state.groups["pv"].get("p_kw")[0]) > 3.0  # midday: the PV is producing


def test_frozen_meter_flagged_within_3_polls(rig):
    ctl, host, poll = rig
    inject(host, "freeze", "meter")
    for k in range(1, 4):
        poll()
        if suspect(ctl, "meter/head"):
            break
    assert suspect(ctl, "meter/head"), f"not flagged after {k} polls"
    a = suspect(ctl, "meter/head")[0]
    assert "stuck" in a["message"] and "e_imp_kwh" in a["message"]
    m = ctl.state.groups["meter"]
    assert m.quality["p_kw"][0] == Q_SUSPECT and np.isnan(m.get("p_kw")[0])
    t = ctl.clock.now()
    assert ctl.hist.good_values("p_kw", ["meter/head"], t - 0.5, t + 1) == []  # no baseline/forecast
    rows = ctl.hist.query("telemetry", device_id="meter/head", since=t)
    assert [r["quality"] for r in rows if r["name"] == "p_kw"] == ["suspect"]
    poll(3)
    assert len(suspect(ctl, "meter/head")) == 1  # one alarm while it lasts
    clear(host, "freeze", "meter")
    poll(2)
    assert suspect(ctl, "meter/head") == [] and np.isfinite(m.get("p_kw")[0])


def test_mis_scaled_pv_flagged_within_3_polls(rig):
    ctl, host, poll = rig
    inject(host, "wrong_scale", "pv:1", 1)
    for k in range(1, 4):
        poll()
        if suspect(ctl, "pv/1"):
            break
    assert suspect(ctl, "pv/1"), f"not flagged after {k} polls"
    assert "beyond_rating" in suspect(ctl, "pv/1")[0]["message"]
    g = ctl.state.groups["pv"]
    assert np.isnan(g.get("p_kw")[1]) and np.isfinite(g.get("p_kw")[0])
    assert suspect(ctl, "pv/0") == []
    clear(host, "wrong_scale", "pv:1")
    poll(2)
    assert suspect(ctl, "pv/1") == []


def test_counter_backwards_and_pf_range_unit():
    from controller.links.base import DeviceInfo
    from controller.state import FleetState, empty_group

    g = empty_group("m", [DeviceInfo("m/0", "m", "meter")])
    st = FleetState(0.0, {"m": g})
    dq = DataQuality()
    for t, e, pf in ((1.0, 10.0, 0.9), (2.0, 9.0, 0.9)):
        g.values = {"p_kw": np.array([50.0]), "e_imp_kwh": np.array([e]), "pf": np.array([pf])}
        g.quality = {k: np.zeros(1, np.int8) for k in g.values}
        g.t = np.array([t])
        out = dq.apply(t, st)
    assert out == {"m/0": "counter_backwards"}
    g.values["pf"] = np.array([1.7])
    g.quality = {k: np.zeros(1, np.int8) for k in g.values}
    g.t = np.array([3.0])
    g.values["e_imp_kwh"] = np.array([9.1])
    assert dq.apply(3.0, st) == {"m/0": "pf_range"}


def test_stuck_needs_time_and_direction_unit():
    """Fast polls inside one register refresh are not 'stuck'; an export counter standing still
    while importing is not either; 3 polls 1 s apart with the import counter still are."""
    from controller.links.base import DeviceInfo
    from controller.state import FleetState, empty_group

    g = empty_group("m", [DeviceInfo("m/0", "m", "meter")])
    st = FleetState(0.0, {"m": g})
    dq = DataQuality()

    def read(t, e_imp, e_exp=5.0, p=400.0):
        g.values = {"p_kw": np.array([p]), "e_imp_kwh": np.array([e_imp]), "e_exp_kwh": np.array([e_exp])}
        g.quality = {k: np.zeros(1, np.int8) for k in g.values}
        g.t = np.array([t])
        return dq.apply(t, st)

    assert all(read(0.2 * k, 100.0) == {} for k in range(1, 6))  # 1 s of 0.2 s polls, one refresh
    assert read(1.2, 100.1) == {} and read(2.2, 100.2) == {}  # export counter still: importing
    assert read(3.2, 100.2) == {} and read(4.2, 100.2) == {"m/0": "stuck"}
