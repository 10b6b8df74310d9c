"""Controller API: no token -> 401, viewer writes -> 403 (and audited as refused), operator
writes take effect and are audited."""

import pytest
from fastapi.testclient import TestClient

from controller.api import create_app
from controller.clock import SteppedClock
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
    ctl = Controller({"bat": link}, clock)
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
    assert [(a["user"], a["ok"]) for a in audit] == [("vera", 0)] * 3


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
