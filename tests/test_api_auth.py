"""Controller API: no token -> 401, viewer writes -> 403 (both audited as refused), operator
writes take effect and are audited."""

import json

import pytest
from fastapi.testclient import TestClient

from controller.api import create_app
from controller.clock import SteppedClock
from controller.commands import PassThroughGate
from controller.core import Controller
from controller.links.modbus import ModbusLink
from controller_devices import DeviceServers, SunSpecBattery

TOKENS = {"v-tok": {"user": "vera", "role": "viewer"}, "o-tok": {"user": "otto", "role": "operator"}}
T0 = 1_780_000_000.0


@pytest.fixture
def api():
    srv = DeviceServers([SunSpecBattery() for _ in range(2)])
    clock = SteppedClock(T0)
    link = ModbusLink(srv.rows(), clock, timeout_s=0.3)
    ctl = Controller({"bat": link}, clock, gate=PassThroughGate())
    ctl.cycle(T0)
    yield TestClient(create_app(ctl, TOKENS)), ctl
    link.close()
    srv.close()


def H(tok):
    return {"Authorization": f"Bearer {tok}"}


def test_unauthenticated_and_viewer_writes_refused(api):
    c, ctl = api
    body = {"start_t": T0 + 60, "duration_s": 600, "reduction_kw": 5}
    assert c.get("/api/fleet").status_code == 401
    assert c.post("/api/dr/events", json=body).status_code == 401
    assert c.post("/api/dr/events", json=body, headers=H("nope")).status_code == 401
    assert c.post("/api/dr/events", json=body, headers=H("v-tok")).status_code == 403
    assert c.post("/api/emergency/shed", json={}, headers=H("v-tok")).status_code == 403
    assert c.post("/api/devices/bat/0/out_of_service", headers=H("v-tok")).status_code == 403
    assert ctl.dr == {} and ctl.emergency is None and ctl.state.groups["bat"].in_service.all()
    # the viewer may read
    f = c.get("/api/fleet", headers=H("v-tok")).json()
    assert f["groups"]["bat"]["count"] == 2 and f["groups"]["bat"]["usable"] == 2
    audit = ctl.hist.query("audit")
    # the three 401s (no token on a read and a write, an unknown token) and the three 403s
    assert [(a["user"], a["ok"], json.loads(a["data"])["status"]) for a in audit] == \
        [("", 0, 401)] * 3 + [("vera", 0, 403)] * 3
    assert [a["action"] for a in audit[:3]] == ["GET /api/fleet", "POST /api/dr/events", "POST /api/dr/events"]


def test_operator_writes_are_applied_and_audited(api):
    c, ctl = api
    r = c.post("/api/dr/events", json={"id": "e1", "start_t": T0 + 60, "duration_s": 600,
                                       "reduction_kw": 5}, headers=H("o-tok"))
    assert r.status_code == 201 and ctl.dr["e1"].status == "pending"
    assert c.post("/api/devices/bat/1/out_of_service", headers=H("o-tok")).status_code == 200
    assert not ctl.state.groups["bat"].in_service[1]
    assert c.post("/api/dr/events/e1/cancel", headers=H("o-tok")).json()["status"] == "cancelled"
    assert c.post("/api/dr/events/zzz/cancel", headers=H("o-tok")).status_code == 404
    acts = [(a["user"], a["action"], a["target"], a["ok"]) for a in ctl.hist.query("audit")]
    assert acts[:3] == [("otto", "dr_create", "e1", 1), ("otto", "device_service", "bat/1", 1),
                        ("otto", "dr_cancel", "e1", 1)]
    assert c.get("/api/audit", headers=H("v-tok")).status_code == 403
    assert "/api/dr/events" in c.get("/openapi.json").json()["paths"]


def test_emergency_shed_reports_margin_hold_and_response(api):
    c, ctl = api
    r = c.post("/api/emergency/shed", json={"reason": "under_frequency"}, headers=H("o-tok"))
    m = r.json()
    # two idle 10 kW / 20 kWh batteries at 50 % with a 10 % reserve: 10 kW each to full
    # discharge; (10 - 2) kWh * 0.95 / 10 kW = 0.76 h = 2736 s of hold; 1 s response
    assert m["plan_margin_kw"] == pytest.approx(20.0) and m["shed_kw"] == pytest.approx(20.0)
    assert m["hold_s"] == pytest.approx(2736.0, abs=1.0) and m["response_s"] == 1.0
    assert m["by_kind"] == {"battery": pytest.approx(20.0)}
    f = c.get("/api/fleet", headers=H("v-tok")).json()
    assert f["emergency"]["hold_s"] == pytest.approx(2736.0, abs=1.0)
    ctl.clock.advance_to(T0 + 60)
    ctl.cycle(T0 + 60)
    sent = ctl.hist.query("setpoints")
    assert sorted((s["device_id"], s["value"]) for s in sent) == [("bat/0", -10.0), ("bat/1", -10.0)]
    assert c.post("/api/emergency/restore", headers=H("o-tok")).status_code == 200
    assert ctl.emergency is None
