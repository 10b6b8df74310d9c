"""Live view in a real headless Chromium against the real controller API on loopback (twin +
in-process controller + controller.api.create_app under uvicorn, see live_rig). One rig and
one dashboard process per module, signed into by several users: login (bad token refused,
logout, expiry), figures update, an operator creates a DR event (margin warning first),
cancels it from its row, takes a device out of service from its row, acknowledges an alarm,
sheds and restores; a viewer gets no action controls and never polls the audit trail."""

import logging
import os
import re
import time
from pathlib import Path

import httpx
import pytest
from browser import CHROMEDRIVER, CHROMIUM, chromium, serve_dash, text_when, wait_for
from live_rig import OPERATOR, VIEWER, LiveRig

ARTIFACTS = Path(os.environ.get("GRIDTWIN_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))
pytestmark = pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER),
                                reason="Debian chromium/chromium-driver not installed")


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    r = LiveRig(tmp_path_factory.mktemp("live")).start()
    yield r
    r.close()


@pytest.fixture(scope="module")
def dash(rig):
    """One dashboard process for every user of this module."""
    from dashboard.app import create_app

    app = create_app(api_url=rig.url, refresh_ms=1000)
    with serve_dash(app) as url:
        yield app, url


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


def _login(drv, url, user, token):
    from selenium.webdriver.common.by import By

    drv.get(url + "login")
    _fill(drv, "login-user", user)
    _fill(drv, "login-token", token)
    drv.find_element(By.ID, "login-submit").click()


def _login_refused(drv):
    """The login page came back (after the form POST) saying the user/token pair is unknown."""
    from selenium.webdriver.common.by import By

    wait_for(drv, lambda d: any("unknown user or token" in e.text for e in d.find_elements(By.ID, "login-error")),
             what="login refusal")


def _signed_in(drv, user, role):
    from selenium.webdriver.common.by import By

    wait_for(drv, lambda d: d.find_elements(By.ID, "live-status")
             and f"signed in as {user} (role {role})" in d.find_element(By.ID, "live-status").text,
             what=f"status bar for {user}")


def _row_action(drv, table_id: str, key_col: str, key: str, action: str | None = None) -> None:
    """Click the 'action' link on the row whose `key_col` cell reads `key` (tables redraw every
    second, so retry on stale elements); with `action`, only once the link reads that (the
    table may still show the row as it was before the last action)."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def click(d):
        try:
            for tr in d.find_elements(By.CSS_SELECTOR, f"#{table_id} tbody tr"):
                cells = tr.find_elements(By.CSS_SELECTOR, f"td[data-dash-column='{key_col}']")
                if cells and cells[0].text.strip() == key:
                    link = tr.find_element(By.CSS_SELECTOR, "td[data-dash-column='action']")
                    if link.text.strip() and (action is None or link.text.strip() == action):
                        link.click()
                        return True
        except StaleElementReferenceException:
            return False
        return False

    wait_for(drv, click, what=f"action link of {key} in {table_id}")


def test_login_required_bad_token_refused_logout_and_expiry(dash):
    from selenium.webdriver.common.by import By

    app, url = dash
    r = httpx.get(url, follow_redirects=False, timeout=10)
    assert r.status_code == 303 and r.headers["location"].endswith("/login")
    r = httpx.post(url + "_dash-update-component", json={}, timeout=10)
    assert r.status_code == 401  # no session: Dash's endpoints refuse, nothing reaches the API
    with chromium() as drv:
        _login(drv, url, "olivia", "wrong-token")
        _login_refused(drv)
        _login(drv, url, "victor", OPERATOR)  # a real token under another user's name
        _login_refused(drv)
        _login(drv, url, "olivia", OPERATOR)
        _signed_in(drv, "olivia", "operator")
        cookie = drv.get_cookie("gridtwin_session")
        assert cookie["httpOnly"] and cookie["value"] not in (OPERATOR, VIEWER)  # the token never goes to the browser
        drv.find_element(By.ID, "live-logout").click()
        wait_for(drv, lambda d: d.find_elements(By.ID, "login-user"), what="login page after logout")
        drv.get(url)
        wait_for(drv, lambda d: d.find_elements(By.ID, "login-user"), what="dashboard to need a login again")
        # expiry: the session outlives its lifetime -> the open page is sent to the login
        _login(drv, url, "olivia", OPERATOR)
        _signed_in(drv, "olivia", "operator")
        sid = drv.get_cookie("gridtwin_session")["value"]
        app.sessions.get(sid).expires_at = time.time() - 1
        wait_for(drv, lambda d: "session has expired" in d.page_source, what="session expiry notice")
        assert "/login" in drv.current_url


def test_operator_sees_updates_creates_and_cancels_dr_event(rig, dash):
    from selenium.webdriver.common.by import By

    _, url = dash
    with chromium(1400, 2600) as drv, _api(rig, OPERATOR) as api:
        _login(drv, url, "olivia", OPERATOR)
        _signed_in(drv, "olivia", "operator")
        # DR panel: the scenario's event, requested vs delivered, as the controller meters it
        wait_for(drv, lambda d: (_plot(d, "live-dr") or [[]])[0] == [8], what="DR requested bar = 8 kW")
        ctl_t0 = api.get("/api/fleet").json()["t"]
        n_head = _plot(drv, "live-head", "t.x.length")
        wait_for(drv, lambda d: (_plot(d, "live-head", "t.x.length") or [0])[0] >= (n_head or [0])[0] + 2,
                 what="head P series to grow")
        assert api.get("/api/fleet").json()["t"] > ctl_t0
        assert _plot(drv, "live-head", "t.name")[0] == "head P metered (kW)"
        # the DR window is shaded and named on the head chart
        shapes = drv.execute_script("return document.querySelector('#live-head .js-plotly-plot').layout.shapes")
        assert shapes and shapes[0]["type"] == "rect"
        ev = api.get("/api/dr/events").json()[0]
        assert abs(_plot(drv, "live-dr")[1][0] - ev["delivered_kw"]) < 0.5 and 90 < ev["delivery_pct"] < 110
        # fleet classes: no head meter / RTU; battery SOC drawn
        fleet_names = _plot(drv, "live-fleet", "t.x")
        assert not any("meter" in x or "rtu" in x for x in fleet_names[0])
        assert any("SOC" in x for x in fleet_names[1])
        # the one-line: every bus coloured by the voltage the API serves
        grid = api.get("/api/grid").json()
        assert len(grid["buses"]) == 44
        # DER markers: every managed device counted once at a bus of the model
        devs = api.get("/api/devices", params={"limit": 1000}).json()["items"]
        assert sum(r["n"] for r in grid["der"]) == sum(d["kind"] not in ("meter", "rtu") for d in devs)
        assert {r["bus"] for r in grid["der"]} <= {b["id"] for b in grid["buses"]}
        wait_for(drv, lambda d: {"pv", "battery"} <= set(_plot(d, "live-oneline", "t.name") or []),
                 what="DER markers on the one-line")
        wait_for(drv, lambda d: "42 devices" in d.find_element(By.ID, "live-dev-msg").text, what="device count")
        margin = api.get("/api/fleet").json()["margin"]["margin_kw"]
        assert f"{margin:.1f} kW" in drv.find_element(By.ID, "live-margin").text or "margin" in \
            drv.find_element(By.ID, "live-margin").text
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / "dashboard_live.png"))

        # a request far beyond the margin warns before confirming; dismissing sends nothing
        n_events = len(api.get("/api/dr/events").json())
        _fill(drv, "act-dr-start-min", 240)  # the rig runs ~150x real time: still pending while we look
        _fill(drv, "act-dr-duration-min", 20)
        _fill(drv, "act-dr-kw", 500)
        drv.find_element(By.ID, "act-dr-create").click()
        text = _confirm(drv, accept=False)
        assert text.startswith("WARNING: 500 kW is more than the available reduction margin"), text
        assert len(api.get("/api/dr/events").json()) == n_events
        # a request that fits: no warning, created under the signed-in user
        _fill(drv, "act-dr-kw", 6.5)
        _fill(drv, "act-dr-groups", "home_batteries")
        drv.find_element(By.ID, "act-dr-create").click()
        text = _confirm(drv, accept=True)
        assert "6.5 kW" in text and "WARNING" not in text
        wait_for(drv, lambda d: d.find_elements(By.ID, "live-action-ok"), what="action result")
        m = re.search(r"dr_create (\S+)", drv.find_element(By.ID, "live-action-ok").text)
        new = {e["id"]: e for e in api.get("/api/dr/events").json()}[m.group(1)]
        assert new["reduction_kw"] == 6.5 and new["duration_s"] == 1200.0 and new["groups"] == ["home_batteries"]
        assert ctl_t0 + 14400 <= new["start_t"] <= api.get("/api/fleet").json()["t"] + 14400  # controller time
        # pending reads "pending" with its start, not "0 %"
        wait_for(drv, lambda d: new["id"] in d.find_element(By.ID, "live-dr-table").text, what="new event in table")
        assert "pending" in drv.find_element(By.ID, "live-dr-table").text
        assert any(t.startswith("pending, starts") for t in _plot(drv, "live-dr", "t.text")[1] if t)
        dr = drv.find_element(By.ID, "live-dr")
        drv.execute_script("arguments[0].scrollIntoView()", dr)
        dr.find_element(By.XPATH, "..").screenshot(str(ARTIFACTS / "dashboard_live_dr.png"))
        # cancel it from its row, confirmed
        _row_action(drv, "live-dr-table", "id", new["id"])
        assert f"Cancel DR event {new['id']}" in _confirm(drv)
        wait_for(drv, lambda d: "dr_cancel" in d.find_element(By.ID, "live-action-result").text, what="cancel result")
        assert {e["id"]: e for e in api.get("/api/dr/events").json()}[new["id"]]["status"] == "cancelled"
        audit = [(a["action"], a["user"], a["target"]) for a in api.get("/api/audit").json()]
        assert ("dr_create", "olivia", new["id"]) in audit and ("dr_cancel", "olivia", new["id"]) in audit
        # take a device out of service from its row
        _row_action(drv, "live-devices", "device_id", "home_batteries/2")
        assert "home_batteries/2 out of service" in _confirm(drv)
        wait_for(drv, lambda d: "out_of_service" in d.find_element(By.ID, "live-action-result").text,
                 what="out-of-service result")
        bad = api.get("/api/devices", params={"unavailable": True}).json()["items"]
        assert [d["device_id"] for d in bad] == ["home_batteries/2"] and bad[0]["in_service"] is False
        _row_action(drv, "live-devices", "device_id", "home_batteries/2", "return to service")  # and back
        assert "Return device home_batteries/2" in _confirm(drv)
        wait_for(drv, lambda d: not api.get("/api/devices", params={"unavailable": True}).json()["items"],
                 what="device back in service")


def test_operator_acks_alarm_on_row_sheds_and_restores(rig, dash):
    from selenium.webdriver.common.by import By

    _, url = dash
    ev = rig.twin.fleets["ev_chargers"]
    with chromium(1400, 1600) as drv, _api(rig, OPERATOR) as api:
        _login(drv, url, "olivia", OPERATOR)
        wait_for(drv, lambda d: d.find_elements(By.ID, "act-shed"), what="operator actions")
        ev.available[1] = False  # the charger stops answering (twin-side fault)
        try:
            wait_for(drv, lambda d: "ev_chargers/1" in d.find_element(By.ID, "live-alarms").text,
                     what="device_unavailable alarm in the alarm table")
            alarm = next(a for a in api.get("/api/alarms").json()
                         if a["kind"] == "device_unavailable" and a["device_id"] == "ev_chargers/1")
            _row_action(drv, "live-alarms", "id", str(alarm["id"]))
            assert f"alarm {alarm['id']}" in _confirm(drv)
            wait_for(drv, lambda d: "alarm_ack" in d.find_element(By.ID, "live-action-result").text, what="ack result")
            assert next(a for a in api.get("/api/alarms").json() if a["id"] == alarm["id"])["acked_by"] == "olivia"
        finally:
            ev.available[1] = True
        drv.find_element(By.ID, "act-restore").click()  # nothing to restore yet: says so, no dialog
        wait_for(drv, lambda d: "no emergency shed is active" in d.find_element(By.ID, "live-action-result").text,
                 what="nothing-to-restore notice")
        drv.find_element(By.ID, "act-shed").click()
        assert "EMERGENCY" in _confirm(drv)
        try:
            banner = text_when(drv, "live-emergency", lambda t: "olivia" in t, what="emergency banner")
            em = api.get("/api/fleet").json()["emergency"]
            assert "olivia" in banner and em["by"] == "olivia"
            assert "margin" in banner and ("hold" in banner or em.get("hold_s") is None)
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            drv.execute_script("window.scrollTo(0, 0)")
            drv.save_screenshot(str(ARTIFACTS / "dashboard_live_emergency.png"))
            drv.find_element(By.ID, "act-restore").click()
            assert "Restore from the EMERGENCY SHED" in _confirm(drv)
            wait_for(drv, lambda d: not d.find_elements(By.ID, "live-emergency"), what="banner to go")
            assert api.get("/api/fleet").json()["emergency"] is None
            actions = [(a["action"], a["user"]) for a in api.get("/api/audit").json()]
            assert ("emergency_shed", "olivia") in actions and ("emergency_restore", "olivia") in actions
        finally:
            if api.get("/api/fleet").json()["emergency"]:
                api.post("/api/emergency/restore")


def test_viewer_in_same_process_sees_no_actions_and_never_polls_audit(rig, dash):
    from selenium.webdriver.common.by import By

    _, url = dash
    with _api(rig, OPERATOR) as op:
        before = len([a for a in op.get("/api/audit", params={"limit": 1000}).json() if a["user"] == "victor"])
    with chromium() as drv, _api(rig, VIEWER) as api:
        _login(drv, url, "victor", VIEWER)
        _signed_in(drv, "victor", "viewer")
        wait_for(drv, lambda d: d.find_elements(By.ID, "live-readonly"), what="read-only notice")
        wait_for(drv, lambda d: 8 in (_plot(d, "live-dr") or [[]])[0], what="viewer still sees DR figures")
        n = drv.execute_script("return document.querySelector('#live-status').textContent.length")
        time.sleep(4)  # four refreshes
        assert n and drv.find_elements(By.CSS_SELECTOR, "button[id^='act-']") == []
        assert not drv.find_element(By.ID, "live-audit-panel").is_displayed()
        assert not drv.find_elements(By.CSS_SELECTOR, "td[data-dash-column='action']")
        assert api.post("/api/dr/events", json={"start_t": 1.9e9, "duration_s": 600,
                                                "reduction_kw": 5}).status_code == 403
    with _api(rig, OPERATOR) as op:
        rows = [a for a in op.get("/api/audit", params={"limit": 1000}).json() if a["user"] == "victor"]
    # only the one refused write above; no refused GET /api/audit per refresh
    assert len(rows) - before == 1 and "audit" not in rows[-1]["action"]
