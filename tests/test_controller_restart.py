"""kill -9 the controller service mid-run, restart it: every committed cycle is whole (no gap,
no half-written cycle), numbering continues, and the active DR event (with the delivery it had
metered), the schedule and an emergency shed are resumed from the historian."""

import json
import signal
import sqlite3
import time

import httpx
import yaml
from controller_devices import DeviceServers, SunSpecBattery
from controller_service import OP, start, stop, wait
from ports import free_port


def _db(path):
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def test_kill9_restart_resumes_dr_event_and_schedule(tmp_path):
    srv = DeviceServers([SunSpecBattery(p_max_kw=10, e_cap_kwh=40, soc_pct=80) for _ in range(2)])
    port = free_port()
    hist = tmp_path / "state" / "historian.sqlite"
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "killtest", "cycle_s": 0.25, "optimize_every_s": 3600,
        "devices": [{"group": "bat", "kind": "battery", "ports": srv.ports, "poll_s": 0.2}],
        "link": {"timeout_s": 0.3}, "historian": {"path": str(hist), "telemetry_every_s": 0.1},
        "api": {"port": port}, "prices": {"base_eur_per_mwh": 80,
                                          "periods": [[0, 12, 40], [12, 24, 200]]}}))
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "controller.log", "wb")
    p = start(cfg, port, log)
    try:
        r = httpx.post(f"{base}/api/dr/events", headers=OP, timeout=5,
                       json={"id": "dr1", "start_t": time.time(), "duration_s": 3600, "reduction_kw": 12})
        assert r.status_code == 201
        assert wait(lambda: _db(hist).execute("SELECT COUNT(*) FROM cycles").fetchone()[0] >= 12
                     and _db(hist).execute("SELECT status FROM dr_events").fetchone()[0] == "active")
        sched = httpx.get(f"{base}/api/schedule", headers=OP, timeout=5).json()
        assert sched and sched["data"]["setpoints"]["bat"]["setpoint"] == "p_set_kw"
        p.send_signal(signal.SIGKILL)
        p.wait(10)

        db = _db(hist)
        ns = [r[0] for r in db.execute("SELECT n FROM cycles ORDER BY n")]
        assert ns == list(range(1, len(ns) + 1))  # no gap
        per = dict(db.execute("SELECT cycle, COUNT(*) FROM telemetry GROUP BY cycle"))
        assert set(per) <= set(ns) and all(v == 6 for v in per.values())  # whole cycles only
        assert db.execute("SELECT status FROM dr_events WHERE id='dr1'").fetchone()[0] == "active"
        n_sched = db.execute("SELECT COUNT(*) FROM schedules").fetchone()[0]
        assert n_sched >= 1
        db.close()
        last = ns[-1]

        n_perf = _db(hist).execute("SELECT COUNT(*) FROM dr_performance WHERE event_id='dr1'").fetchone()[0]
        assert n_perf >= 2

        p = start(cfg, port, log)
        evs = httpx.get(f"{base}/api/dr/events", headers=OP, timeout=5).json()
        assert [(e["id"], e["status"]) for e in evs] == [("dr1", "active")]
        assert evs[0]["cycles"] >= n_perf  # DR performance goes on from the historian, not from 0
        assert httpx.get(f"{base}/api/schedule", headers=OP, timeout=5).json()["t0"] == sched["t0"]
        assert wait(lambda: _db(hist).execute(
            "SELECT COUNT(*) FROM setpoints WHERE cycle > ? AND source='dr'", (last,)).fetchone()[0] >= 2)
        db = _db(hist)
        ns2 = [r[0] for r in db.execute("SELECT n FROM cycles ORDER BY n")]
        assert ns2[:len(ns)] == ns and ns2 == list(range(1, len(ns2) + 1))
        resumed = [json.loads(d) for (d,) in db.execute(
            "SELECT data FROM events WHERE kind='controller_resumed'")]
        assert resumed and resumed[-1]["dr_events"] == ["dr1"] and resumed[-1]["cycle"] == last
        # the DR reduction is being delivered again: batteries discharge after the restart
        assert wait(lambda: sum(d.setpoint_kw() for d in srv.devices) < -11.0, 10)
        db.close()
    finally:
        stop(p)
        log.close()
        srv.close()


def test_kill9_after_shed_resumes_the_emergency_and_restore_releases(tmp_path):
    srv = DeviceServers([SunSpecBattery(p_max_kw=10, e_cap_kwh=40, soc_pct=80) for _ in range(2)])
    port = free_port()
    hist = tmp_path / "state" / "historian.sqlite"
    cfg = tmp_path / "controller.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "shedtest", "cycle_s": 0.25,
        "devices": [{"group": "bat", "kind": "battery", "ports": srv.ports, "poll_s": 0.2}],
        "link": {"timeout_s": 0.3}, "historian": {"path": str(hist)}, "api": {"port": port},
        "emergency": {"restore_spread_s": 1.0}}))
    base = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "controller.log", "wb")
    p = start(cfg, port, log)
    try:
        assert wait(lambda: _db(hist).execute("SELECT COUNT(*) FROM cycles").fetchone()[0] >= 3)
        assert httpx.post(f"{base}/api/emergency/shed", headers=OP, json={"reason": "test"},
                          timeout=10).status_code == 200
        assert wait(lambda: all(d.setpoint_kw() <= -9.9 for d in srv.devices), 10)
        p.send_signal(signal.SIGKILL)
        p.wait(10)

        p = start(cfg, port, log)
        em = httpx.get(f"{base}/api/fleet", headers=OP, timeout=5).json()["emergency"]
        assert em is not None and em["plan"]["commands"] == 2 and em["shed_kw"] > 19.0
        assert all(d.setpoint_kw() <= -9.9 for d in srv.devices)  # the field is still shed
        assert httpx.post(f"{base}/api/emergency/restore", headers=OP, timeout=10).status_code == 200
        # the staged restore (batteries at its end, 1 s here) releases what the dead process shed
        assert wait(lambda: all(abs(d.setpoint_kw()) < 1e-6 for d in srv.devices), 15)
        assert wait(lambda: _db(hist).execute(
            "SELECT COUNT(*) FROM events WHERE kind='emergency_restored'").fetchone()[0] == 1, 10)
    finally:
        stop(p)
        log.close()
        srv.close()
