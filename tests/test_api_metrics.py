"""GET /metrics (issue 17): Prometheus text format a Prometheus parser reads, with cycle time by
part (every cycle counted), devices by quality, gate verdicts, emergency and alarms; viewer
token required. Real SunSpec batteries over Modbus TCP."""

from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families

from controller.api import create_app
from controller.clock import SteppedClock
from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.links.modbus import ModbusLink
from controller_devices import DeviceServers, SunSpecBattery

T0 = 1_780_000_000.0


def samples(text):
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_text_format():
    srv = DeviceServers([SunSpecBattery() for _ in range(3)])
    clock = SteppedClock(T0)
    link = ModbusLink(srv.rows(), clock, timeout_s=0.3, max_failures=1, backoff_s=600)
    try:
        ctl = Controller({"bat": link}, clock, gate=PassThroughGate(), settings=CycleSettings(cycle_s=60))
        c = TestClient(create_app(ctl, {"v": {"user": "v", "role": "viewer"}}, watch_s=0))
        assert c.get("/metrics").status_code == 401
        ctl.cycle(T0)
        srv.devices[2].block.refuse = True  # exception responses: unavailable after one failure
        ctl.set_emergency(True, reason="test")
        for k in range(1, 4):
            clock.advance_to(T0 + 60 * k)
            ctl.cycle(T0 + 60 * k)
        r = c.get("/metrics", headers={"Authorization": "Bearer v"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        m = samples(r.text)
        assert m[("gridtwin_cycle_seconds_count", (("part", "total"),))] == 4
        assert m[("gridtwin_cycle_seconds_count", (("part", "read"),))] == 4
        assert m[("gridtwin_devices", (("group", "bat"), ("kind", "battery"), ("quality", "good")))] == 2
        assert m[("gridtwin_devices", (("group", "bat"), ("kind", "battery"), ("quality", "unavailable")))] == 1
        assert m[("gridtwin_gate_decisions_total", (("verdict", "accepted"),))] >= 2
        assert m[("gridtwin_emergency_active", ())] == 1
        assert m[("gridtwin_alarms_active", (("kind", "device_unavailable"),))] == 1
        assert m[("gridtwin_cycle_number", ())] == 4
        # a second scrape counts only the new cycles
        clock.advance_to(T0 + 240)
        ctl.cycle(T0 + 240)
        m = samples(c.get("/metrics", headers={"Authorization": "Bearer v"}).text)
        assert m[("gridtwin_cycle_seconds_count", (("part", "total"),))] == 5
    finally:
        link.close()
        srv.close()
