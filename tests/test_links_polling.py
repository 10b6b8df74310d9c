"""Device acquisition (issue 17) over real Modbus TCP on 127.0.0.1: a slow device is reported
late (STALE) for the cycle while the others are read fresh; a controller started before its
devices logs "connection refused", and uses the batteries' flexibility (margin, emergency
shed) once they come up; ratings are rediscovered after a reconnect."""

import logging
import time

import numpy as np
import pytest

from controller.clock import SteppedClock
from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.links.base import Quality
from controller.links.modbus import ModbusLink
from controller_devices import DeviceServers, SunSpecBattery
from ports import free_ports

T0 = 1_780_000_000.0


def test_slow_device_is_late_not_holding_up_the_others():
    srv = DeviceServers([SunSpecBattery() for _ in range(3)])
    clock = SteppedClock(T0)
    link = ModbusLink(srv.rows(), clock, timeout_s=3.0, deadline_s=0.4, poll_s=1.0)
    try:
        link.devices()
        r = link.read()
        assert all(v["p_kw"].quality == Quality.GOOD for v in r.values())
        srv.devices[2].block.hang = True  # answers, but a second late each request
        clock.advance(1.0)
        r = link.read()
        assert r["bat/2"]["p_kw"].quality == Quality.STALE  # late this cycle
        for dev in ("bat/0", "bat/1"):  # the others are read in the same cycle, fresh
            assert r[dev]["p_kw"].quality == Quality.GOOD and r[dev]["p_kw"].t == clock.now()
        assert link.late >= 1 and link.status()["bat/2"].available
        srv.devices[2].block.hang = False
        end = time.monotonic() + 20
        while time.monotonic() < end:  # its poll finishes in the background; next cycle it is back
            clock.advance(1.0)
            r = link.read()
            if r["bat/2"]["p_kw"].quality == Quality.GOOD:
                break
        assert r["bat/2"]["p_kw"].quality == Quality.GOOD
    finally:
        link.close()
        srv.close()


def test_controller_started_before_its_devices_uses_them_once_up(caplog):
    ports = free_ports(2)
    rows = [{"device_id": f"bat/{i}", "group": "bat", "kind": "battery", "host": "127.0.0.1",
             "port": p, "unit": 1} for i, p in enumerate(ports)]
    clock = SteppedClock(T0)
    link = ModbusLink(rows, clock, timeout_s=0.5, max_failures=1, backoff_s=1.0, backoff_max_s=2.0)
    srv = None
    try:
        with caplog.at_level(logging.INFO, logger="controller.links.modbus"):
            ctl = Controller({"bat": link}, clock, gate=PassThroughGate(), settings=CycleSettings(cycle_s=5))
            ctl.cycle(T0)
        assert "connection refused" in caplog.text and "no SunSpec marker" not in caplog.text
        assert ctl.margin()["battery_kw"] == 0.0
        srv = DeviceServers([SunSpecBattery(p_max_kw=10) for _ in range(2)], ports=ports)
        for k in range(1, 4):
            clock.advance_to(T0 + 5 * k)
            ctl.cycle(T0 + 5 * k)
        assert np.allclose(ctl.state.groups["bat"].rating("p_max_kw"), 10.0)
        assert ctl.margin()["battery_kw"] == pytest.approx(20.0)
        found = ctl.hist.events_of("device_discovered")
        assert sorted(e["device_id"] for e in found) == ["bat/0", "bat/1"]
        assert found[0]["ratings"]["p_max_kw"] == 10.0
        ctl.set_emergency(True, reason="test")
        clock.advance_to(T0 + 20)
        ctl.cycle(T0 + 20)
        assert [round(d.setpoint_kw(), 3) for d in srv.devices] == [-10.0, -10.0]
        # the devices are replaced by 5 kW units on the same ports: rediscovered after reconnect
        ctl.set_emergency(False)
        srv.close()
        srv = None
        for k in range(5, 8):
            clock.advance_to(T0 + 5 * k)
            ctl.cycle(T0 + 5 * k)
        srv = DeviceServers([SunSpecBattery(p_max_kw=5) for _ in range(2)], ports=ports)
        for k in range(8, 12):
            clock.advance_to(T0 + 5 * k)
            ctl.cycle(T0 + 5 * k)
        assert np.allclose(ctl.state.groups["bat"].rating("p_max_kw"), 5.0)
        assert ctl.margin()["battery_kw"] == pytest.approx(10.0)
    finally:
        link.close()
        if srv is not None:
            srv.close()
