"""API input (issue 17): non-finite or absurd numbers, unsafe ids, oversized bodies and alarm
ids beyond int64 are 4xx and change nothing; DR above the margin warns (or is refused, per
config) and an under-delivering event raises an alarm; history is paged and bounded and the
audit trail is operator-only on every path. Real SunSpec batteries over Modbus TCP."""

import json

import pytest
from controller_devices import DeviceServers, SunSpecBattery
from fastapi.testclient import TestClient
from polling import wait

from controller.api import create_app
from controller.api_settings import ApiSettings
from controller.clock import SteppedClock
from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.links.modbus import ModbusLink

TOKENS = {"v-tok": {"user": "vera", "role": "viewer"}, "o-tok": {"user": "otto", "role": "operator"}}
T0 = 1_780_000_000.0
V, O = {"Authorization": "Bearer v-tok"}, {"Authorization": "Bearer o-tok"}


@pytest.fixture(scope="module")
def rig():
    srv = DeviceServers([SunSpecBattery() for _ in range(2)])  # 2 x 10 kW, 20 kWh at 50 %
    clock = SteppedClock(T0)
    link = ModbusLink(srv.rows(), clock, timeout_s=0.5)
    ctl = Controller({"bat": link}, clock, gate=PassThroughGate(), settings=CycleSettings(cycle_s=60.0))
    ctl.cycle(T0)
    yield srv, ctl
    link.close()
    srv.close()


def client(ctl, **kw):
    return TestClient(create_app(ctl, TOKENS, ApiSettings(**kw), watch_s=0.05))


def raw_post(c, path, text):
    return c.post(path, content=text, headers={**O, "Content-Type": "application/json"})


@pytest.mark.parametrize("body, needle", [
    ('{"start_t": NaN, "duration_s": 600, "reduction_kw": 5}', "finite"),
    ('{"start_t": %f, "duration_s": 600, "reduction_kw": 1e999}' % T0, "finite"),
    ('{"start_t": %f, "duration_s": Infinity, "reduction_kw": 5}' % T0, "finite"),
    ('{"start_t": %f, "duration_s": 691200, "reduction_kw": 5}' % T0, "longer than"),
    ('{"start_t": %f, "duration_s": 600, "reduction_kw": 5}' % (T0 + 30 * 86400), "from now"),
    ('{"start_t": %f, "duration_s": 600, "reduction_kw": 500}' % T0, "x the fleet"),
    ('{"id": "a/b", "start_t": %f, "duration_s": 600, "reduction_kw": 5}' % T0, "pattern"),
    ('{"id": "%s", "start_t": %f, "duration_s": 600, "reduction_kw": 5}' % ("x" * 65, T0), "pattern"),
    ('{"start_t": %f, "duration_s": 600, "reduction_kw": 5, "groups": ["nope"]}' % T0, "unknown group"),
    ('{"start_t": %f, "end_t": %f, "reduction_kw": 5}' % (T0, T0 - 1), "duration_s > 0"),
])
def test_bad_dr_requests_are_4xx_and_store_nothing(rig, body, needle):
    _, ctl = rig
    c = client(ctl)
    r = raw_post(c, "/api/dr/events", body)
    assert r.status_code == 422, r.text
    assert needle in r.text
    assert ctl.dr == {} and ctl.hist.dr_events() == []
    assert c.get("/api/dr/events", headers=V).status_code == 200


def test_other_inputs_bounded(rig):
    _, ctl = rig
    c = client(ctl, max_body_bytes=1024)
    big = json.dumps({"reason": "x" * 5000})
    assert raw_post(c, "/api/emergency/shed", big).status_code == 413
    assert ctl.emergency is None
    assert c.post("/api/alarms/99999999999999999999999/ack", headers=O).status_code == 422
    assert c.post("/api/alarms/9223372036854775807/ack", headers=O).status_code == 404
    assert c.post("/api/commands", json={"device_id": "bat/0", "setpoint": "p_set_kw", "value": 1e300},
                  headers=O).status_code == 422
    assert raw_post(c, "/api/commands", '{"device_id": "bat/0", "setpoint": "p_set_kw", "value": NaN}'
                    ).status_code == 422
    assert c.post("/api/devices/" + "a" * 300 + "/out_of_service", headers=O).status_code == 422
    assert c.get("/api/history/telemetry?since=nan", headers=V).status_code == 422
    assert c.get("/api/devices?limit=100000", headers=V).status_code == 422
    assert ctl.operator_cmds == []


def test_history_paged_and_audit_operator_only(rig):
    _, ctl = rig
    c = client(ctl, history_page_rows=10)
    for i in range(25):
        ctl.hist.log_event(T0, "probe", i=i)
    r = c.get("/api/history/events?limit=100000", headers=V)
    rows = r.json()
    assert len(rows) == 10 and json.loads(rows[-1]["data"]) == {"i": 24}
    seen = [json.loads(x["data"])["i"] for x in rows if x["kind"] == "probe"]
    while "X-Next-Before" in r.headers:
        r = c.get(f"/api/history/events?limit=10&before={r.headers['X-Next-Before']}", headers=V)
        seen = [json.loads(x["data"])["i"] for x in r.json() if x["kind"] == "probe"] + seen
    assert seen == list(range(25))
    n_audit = len(ctl.hist.query("audit", limit=10_000))
    assert c.get("/api/history/audit", headers=V).status_code == 403
    assert c.get("/api/audit", headers=V).status_code == 403
    assert c.get("/api/history/audit", headers=O).status_code == 200
    denied = ctl.hist.query("audit", limit=10_000)[n_audit:]
    assert [(a["user"], a["action"], a["ok"]) for a in denied] == [
        ("vera", "GET /api/history/audit", 0), ("vera", "GET /api/audit", 0)]


def test_denied_audit_is_rate_limited(rig):
    _, ctl = rig
    c = client(ctl, denied_audit_per_min=5)
    n0 = len(ctl.hist.query("audit", limit=100_000))
    for _ in range(40):
        assert c.get("/api/fleet", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert len(ctl.hist.query("audit", limit=100_000)) - n0 <= 5 + 1  # + the minute's tally row
    m = c.get("/metrics", headers=V).text
    assert 'gridtwin_api_denied_total{code="401"} 40.0' in m


def test_dr_beyond_margin_warns_or_409_and_under_delivery_alarm(rig):
    srv, ctl = rig
    t = ctl.clock.now()
    c409 = client(ctl, dr_beyond_margin="reject")
    r = c409.post("/api/dr/events", json={"id": "big", "start_t": t, "duration_s": 3600,
                                           "reduction_kw": 30}, headers=O)
    assert r.status_code == 409 and "above the margin" in r.text and "big" not in ctl.dr
    c = client(ctl, dr_under_delivery_pct=80, dr_under_delivery_s=120)
    r = c.post("/api/dr/events", json={"id": "big", "start_t": t + 60, "duration_s": 3600,
                                        "reduction_kw": 30}, headers=O)
    assert r.status_code == 201, r.text
    assert "above the margin" in r.json()["warnings"][0]
    assert [a["kind"] for a in ctl.hist.alarms(active_only=True)
            if a["device_id"] == "big"] == ["dr_beyond_margin"]
    for k in range(1, 6):  # 2 x 10 kW deliver 20 of 30 kW: 67 % < 80 % for 2+ cycles
        tk = t + 60 * k
        ctl.clock.advance_to(tk)
        ctl.cycle(tk)
        for b in srv.devices:
            b.step(60.0)
    assert wait(lambda: any(a["kind"] == "dr_under_delivery" and a["device_id"] == "big"
                            for a in ctl.hist.alarms(active_only=True)))
    ev = [e for e in c.get("/api/dr/events", headers=V).json() if e["id"] == "big"][0]
    assert ev["status"] == "active" and 15 < ev["delivered_kw"] < 24
    m = c.get("/metrics", headers=V).text
    assert 'gridtwin_dr_requested_kw{event="big"} 30.0' in m
    assert 'gridtwin_alarms_active{kind="dr_under_delivery"} 1.0' in m
