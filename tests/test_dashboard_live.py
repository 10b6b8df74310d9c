"""Live view in a real headless Chromium against the real controller API on loopback (twin +
in-process controller + controller.api.create_app under uvicorn, see live_rig):
figures update between refreshes, an operator creates a DR event through the UI (confirmed)
and it is in the API and its audit trail, a viewer gets no action buttons and the API
refuses its writes."""

import logging
import os
import re
from pathlib import Path

import httpx
import pytest
from browser import CHROMEDRIVER, CHROMIUM, chromium, serve_dash, wait_for
from live_rig import OPERATOR, VIEWER, LiveRig

ARTIFACTS = Path(os.environ.get("GRIDTWIN_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))
needs_browser = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                   reason="Debian chromium/chromium-driver not installed")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    r = LiveRig(tmp_path_factory.mktemp("live")).start()
    yield r
    r.close()


def _api(rig, token):
    return httpx.Client(base_url=rig.url, headers={"Authorization": f"Bearer {token}"}, timeout=5.0)


def _plot(drv, graph_id: str, expr: str = "t.y"):
    """Data currently drawn by Plotly in dcc.Graph `graph_id` (one list per trace)."""
    return drv.execute_script(
        f"const g = document.querySelector('#{graph_id} .js-plotly-plot');"
        f"return g && g.data ? g.data.map(t => {expr}) : null;")


def _confirm(drv, accept: bool = True):
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    alert = WebDriverWait(drv, 15).until(EC.alert_is_present(), "no confirmation dialog appeared")
    text = alert.text
    alert.accept() if accept else alert.dismiss()
    return text


def _fill(drv, elem_id: str, value) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    e = drv.find_element(By.ID, elem_id)
    e.send_keys(Keys.CONTROL, "a")
    e.send_keys(Keys.DELETE)
    e.send_keys(str(value))


@needs_browser
def test_operator_sees_updates_and_creates_dr_event(rig):
    from selenium.webdriver.common.by import By

    from dashboard.app import create_app

    app = create_app(api_url=rig.url, token=OPERATOR, refresh_ms=1000)
    with serve_dash(app) as url, chromium(1400, 2600) as drv, _api(rig, OPERATOR) as api:
        drv.get(url)
        wait_for(drv, lambda d: "role operator" in d.find_element(By.ID, "live-status").text, what="status bar")
        # DR panel: the scenario's event, requested vs delivered, as the controller meters it
        wait_for(drv, lambda d: (_plot(d, "live-dr") or [[]])[0] == [8], what="DR requested bar = 8 kW")
        ctl_t0 = api.get("/api/fleet").json()["t"]
        n_trend = _plot(drv, "live-dr-trend", "t.x.length")
        n_head = _plot(drv, "live-head", "t.x.length")
        wait_for(drv, lambda d: (_plot(d, "live-dr-trend", "t.x.length") or [0])[0] >= (n_trend or [0])[0] + 2,
                 what="DR delivery trend to grow by two cycles")
        wait_for(drv, lambda d: (_plot(d, "live-head", "t.x.length") or [0])[0] >= (n_head or [0])[0] + 2,
                 what="fleet P series to grow")
        assert api.get("/api/fleet").json()["t"] > ctl_t0  # the controller moved on meanwhile
        # the head panel draws the controller's metered feeder head (GET /api/head), not the fleet sum
        assert _plot(drv, "live-head", "t.name")[0] == "head P metered (kW)"
        head_p = api.get("/api/head").json()["p_kw"]
        drawn = _plot(drv, "live-head")[0]
        assert len(drawn) >= 3 and all(min(abs(y - v) for v in head_p) < 1e-6 for y in drawn[-3:])
        ev = api.get("/api/dr/events").json()[0]
        assert abs(_plot(drv, "live-dr")[1][0] - ev["delivered_kw"]) < 0.5 and 90 < ev["delivery_pct"] < 110
        trend = _plot(drv, "live-dr-trend")[0]
        assert all(7.0 < y < 9.0 for y in trend[1:])  # metered delivery per cycle tracks the 8 kW
        # the one-line: every bus coloured by the voltage the API serves, and it updates
        grid = api.get("/api/grid").json()
        n_bus = len(grid["buses"])
        assert n_bus == 44 and all(b["v_pu"] is not None for b in grid["buses"])

        def bus_v(d):
            return (_plot(d, "live-oneline", "t.marker && t.marker.color") or [None])[-1]

        first = wait_for(drv, lambda d: (v := bus_v(d)) and len(v) == n_bus and v, what="bus voltages drawn")
        assert all(0.9 < x < 1.1 for x in first)
        changed = wait_for(drv, lambda d: (v := bus_v(d)) and v != first and v, timeout_s=45,
                           what="bus voltages to update")
        now = {b["id"]: b["v_pu"] for b in api.get("/api/grid").json()["buses"]}
        assert max(abs(a - b) for a, b in zip(changed, first)) > 1e-5 and len(now) == n_bus
        # device table pages on the server: 20 of 42 rows (40 DERs, the RTU, the head meter), 3 pages
        wait_for(drv, lambda d: "42 devices" in d.find_element(By.ID, "live-dev-msg").text, what="device count")
        assert len(drv.find_elements(By.CSS_SELECTOR, "#live-devices tbody tr")) == 21  # header + 20
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / "dashboard_live.png"))

        # create a DR event through the UI; dismissing the confirmation sends nothing
        n_events = len(api.get("/api/dr/events").json())
        _fill(drv, "act-dr-start-min", 5)
        _fill(drv, "act-dr-duration-min", 20)
        _fill(drv, "act-dr-kw", 6.5)
        _fill(drv, "act-dr-groups", "home_batteries")
        drv.find_element(By.ID, "act-dr-create").click()
        assert "6.5 kW" in _confirm(drv, accept=False)
        drv.find_element(By.ID, "act-dr-create").click()
        _confirm(drv, accept=True)
        wait_for(drv, lambda d: d.find_elements(By.ID, "live-action-ok"), what="action result")
        m = re.search(r"dr_create (\S+)", drv.find_element(By.ID, "live-action-ok").text)
        assert m, drv.find_element(By.ID, "live-action-ok").text
        events = {e["id"]: e for e in api.get("/api/dr/events").json()}
        assert len(events) == n_events + 1  # the dismissed dialog created nothing
        new = events[m.group(1)]
        assert new["reduction_kw"] == 6.5 and new["duration_s"] == 1200.0
        assert new["groups"] == ["home_batteries"] and new["source"] == "api"
        assert ctl_t0 + 300 <= new["start_t"] <= api.get("/api/fleet").json()["t"] + 300  # controller time
        audit = [a for a in api.get("/api/audit").json() if a["action"] == "dr_create"]
        assert [(a["user"], a["role"], a["target"]) for a in audit] == [("olivia", "operator", new["id"])]
        wait_for(drv, lambda d: new["id"] in d.find_element(By.ID, "live-dr-table").text, what="new event in table")
        wait_for(drv, lambda d: "dr_create" in d.find_element(By.ID, "live-audit").text, what="audit table")

        # force a device out of service: the controller stops counting it as usable
        _fill(drv, "act-dev-id", "home_batteries/2")
        drv.find_element(By.ID, "act-dev-oos").click()
        assert "home_batteries/2" in _confirm(drv)
        wait_for(drv, lambda d: "out_of_service" in d.find_element(By.ID, "live-action-result").text,
                 what="out-of-service result")
        bad = api.get("/api/devices", params={"unavailable": True}).json()["items"]
        assert [d["device_id"] for d in bad] == ["home_batteries/2"] and bad[0]["in_service"] is False
        drv.find_element(By.CSS_SELECTOR, "#live-dev-filter input").click()
        wait_for(drv, lambda d: "out of service (operator)" in d.find_element(By.ID, "live-devices").text,
                 what="device table to show the out-of-service device and why")
        dr = drv.find_element(By.ID, "live-dr")
        drv.execute_script("arguments[0].scrollIntoView()", dr)
        dr.find_element(By.XPATH, "..").screenshot(str(ARTIFACTS / "dashboard_live_dr.png"))


@needs_browser
def test_operator_sees_offline_device_acks_alarm_and_sheds(rig):
    from selenium.webdriver.common.by import By

    from dashboard.app import create_app

    app = create_app(api_url=rig.url, token=OPERATOR, refresh_ms=1000)
    ev = rig.twin.fleets["ev_chargers"]
    with serve_dash(app) as url, chromium(1400, 1600) as drv, _api(rig, OPERATOR) as api:
        drv.get(url)
        wait_for(drv, lambda d: d.find_elements(By.ID, "act-shed"), what="operator actions")
        ev.available[1] = False  # the charger stops answering (twin-side fault)
        try:
            wait_for(drv, lambda d: "ev_chargers/1" in d.find_element(By.ID, "live-alarms").text,
                     what="device_unavailable alarm in the alarm table")
            alarm = next(a for a in api.get("/api/alarms").json()
                         if a["kind"] == "device_unavailable" and a["device_id"] == "ev_chargers/1")
            drv.find_element(By.CSS_SELECTOR, "#live-dev-filter input").click()
            wait_for(drv, lambda d: "offline: not answering" in d.find_element(By.ID, "live-devices").text,
                     what="device table to say why ev_chargers/1 is unusable")
            _fill(drv, "act-alarm-id", alarm["id"])
            drv.find_element(By.ID, "act-alarm-ack").click()
            assert f"alarm {alarm['id']}" in _confirm(drv)
            wait_for(drv, lambda d: "alarm_ack" in d.find_element(By.ID, "live-action-result").text,
                     what="ack result")
            acked = next(a for a in api.get("/api/alarms").json() if a["id"] == alarm["id"])
            assert acked["acked_by"] == "olivia"
        finally:
            ev.available[1] = True
        drv.find_element(By.ID, "act-shed").click()
        assert "EMERGENCY" in _confirm(drv)
        try:
            wait_for(drv, lambda d: d.find_elements(By.ID, "live-emergency"), what="emergency banner")
            assert "olivia" in drv.find_element(By.ID, "live-emergency").text
            assert api.get("/api/fleet").json()["emergency"]["by"] == "olivia"
            actions = [(a["action"], a["user"]) for a in api.get("/api/audit").json()]
            assert ("alarm_ack", "olivia") in actions and ("emergency_shed", "olivia") in actions
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            drv.execute_script("window.scrollTo(0, 0)")
            drv.save_screenshot(str(ARTIFACTS / "dashboard_live_emergency.png"))
        finally:
            assert api.post("/api/emergency/restore").status_code == 200


@needs_browser
def test_viewer_sees_no_actions_and_api_refuses_writes(rig):
    from selenium.webdriver.common.by import By

    from dashboard.app import create_app

    app = create_app(api_url=rig.url, token=VIEWER, refresh_ms=1000)
    with serve_dash(app) as url, chromium() as drv, _api(rig, VIEWER) as api:
        drv.get(url)
        wait_for(drv, lambda d: "role viewer" in d.find_element(By.ID, "live-status").text, what="status bar")
        wait_for(drv, lambda d: d.find_elements(By.ID, "live-readonly"), what="read-only notice")
        wait_for(drv, lambda d: 8 in (_plot(d, "live-dr") or [[]])[0], what="viewer still sees DR figures")
        assert drv.find_elements(By.CSS_SELECTOR, "#live-actions button") == []
        assert drv.find_elements(By.CSS_SELECTOR, "button[id^='act-']") == []
        assert "HTTP 403" in drv.find_element(By.ID, "live-audit-msg").text  # audit trail is operator-only
        before = api.get("/api/dr/events").json()
        r = api.post("/api/dr/events", json={"start_t": 1.9e9, "duration_s": 600, "reduction_kw": 5})
        assert r.status_code == 403
        assert api.get("/api/dr/events").json() == before or len(api.get("/api/dr/events").json()) == len(before)
    with _api(rig, OPERATOR) as op:
        denied = [a for a in op.get("/api/audit").json() if a["user"] == "victor"]
        assert denied and denied[-1]["ok"] == 0
