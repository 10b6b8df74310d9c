"""Controller over ModbusLink against SunSpec battery servers on 127.0.0.1: a simulated hour
with a DR event; one device hangs mid-event, is excluded, and the others make up for it."""

import numpy as np
import pytest

from controller.clock import SteppedClock
from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.links.modbus import ModbusLink
from controller_devices import DeviceServers, SunSpecBattery

T0 = 1_780_000_000.0


@pytest.fixture
def fleet():
    devs = [SunSpecBattery(p_max_kw=10, e_cap_kwh=20, soc_pct=60) for _ in range(6)]
    srv = DeviceServers(devs)
    yield devs, srv
    srv.close()


def test_discovery_scale_factors_and_readback(fleet):
    devs, srv = fleet
    clock = SteppedClock(T0)
    link = ModbusLink(srv.rows(), clock, timeout_s=0.3)
    info = {d.device_id: d for d in link.devices()}
    assert info["bat/0"].ratings == {"p_max_kw": 10.0, "e_cap_kwh": 20.0, "soc_min_kwh": 2.0}
    r = link.read()["bat/3"]
    assert r["soc_pct"].value == pytest.approx(60.0) and r["soc_pct"].quality == "good"
    assert r["soc_kwh"].value == pytest.approx(12.0)
    assert r["p_kw"].quality == "good"
    assert link.write("bat/3", "p_set_kw", -4.0) is True
    assert devs[3].setpoint_kw() == pytest.approx(-4.0)
    assert link.write("bat/3", "p_set_kw", 2.5) is True
    assert devs[3].setpoint_kw() == pytest.approx(2.5)
    link.close()


def test_dr_hour_met_within_5pct_with_a_device_timing_out(fleet):
    devs, srv = fleet
    clock = SteppedClock(T0)
    link = ModbusLink(srv.rows(), clock, timeout_s=0.3, max_failures=2, backoff_s=600)
    ctl = Controller({"bat": link}, clock, PassThroughGate(),
                     settings=CycleSettings(cycle_s=60, telemetry_every_s=60))
    ctl.add_dr_event("ev1", T0 + 300, 3600, 30.0)
    delivered = []
    for k in range(70):
        t = T0 + 60 * k
        clock.advance_to(t)
        ctl.cycle(t)
        if k == 25:  # bat/2 trips: stops answering and stops delivering
            devs[2].block.hang = True
            devs[2].tripped = True
        for d in devs:
            d.step(60)
        if T0 + 300 <= t < T0 + 3900:
            delivered.append(-sum(d.p_kw for d in devs))  # physical kW over [t, t+60)
    link.close()
    st = link.status()["bat/2"]
    assert not st.available and "No response" in st.reason
    assert np.mean(delivered) == pytest.approx(30.0, rel=0.05)
    assert min(delivered[30:]) > 0.95 * 30.0  # the five others carried the event alone
    assert devs[2].p_kw == 0.0
    perf = ctl.dr_summary()["ev1"]
    assert perf["status"] == "completed" and abs(perf["delivery_pct"] - 100) < 5
    alarms = ctl.hist.alarms()
    assert any(a["kind"] == "device_unavailable" and a["device_id"] == "bat/2" for a in alarms)
    # telemetry of the missing device is recorded as missing, not as a value
    rows = ctl.hist.query("telemetry", device_id="bat/2", since=T0 + 40 * 60)
    assert rows and all(r["quality"] in ("missing", "stale") for r in rows)
