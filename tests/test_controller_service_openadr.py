"""`gridtwin controller serve` end to end, real parts on loopback: the service runs as a
subprocess against emulated field devices (SunSpec batteries and head meter, plain-map flexible
loads, the IEC 104 RTU) over a twin stepped at wall-clock time, and registers with a real
openleadr VTN as its VEN. The VTN's event appears in the API with source openadr and opt-in,
the controller's writes cut the emulated fleet's power by the requested amount, the VTN gets
the opt-in; an event beyond the margin is opted out, a VTN cancellation cancels, and a VTN that
goes away raises an alarm while the cycle keeps running."""

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from controller_service import stop
from openadr_vtn import VEN_ID, Vtn, wait_for
from ports import free_port

from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin

ROOT = Path(__file__).resolve().parents[1]
REQ_KW = 30.0
TOL = 0.10  # delivered within 10 % of the request once settled (first 6 s of the event excluded)
CYCLE_S = 2  # > the device step + poll: each cycle meters the previous cycle's writes
EVENT_S = 20.0


def scenario(start: datetime) -> Scenario:
    return Scenario.model_validate({
        "name": "service_e2e", "start": start.isoformat(), "duration_s": 900, "seed": 5,
        "device_step_s": 1, "power_flow_interval_s": 5,
        "feeder": {"kind": "cigre_lv", "limits": {"v_min_pu": 0.9, "v_max_pu": 1.1}},
        "fleet": [
            {"name": "bat", "kind": "battery", "count": 4,
             "params": {"e_cap_kwh": 20, "p_max_kw": 10, "soc_init_pct": 70}},
            {"name": "flex", "kind": "flex_load", "count": 2, "params": {"p_nom_kw": 40, "flex_share": 0.5}},
        ],
        "outputs": {"report": False}})


class RealTimeTwin:
    """The twin behind the emulators, stepped to wall-clock time in a thread; records the
    fleet's reduction against its own baseline (battery 0, flex load p_base_kw) per step."""

    def __init__(self, start: datetime):
        self.tw = Twin(scenario(start))
        self.t0 = start.timestamp()
        self.host = EmulatorHost(self.tw)
        self.rows = self.host.start()
        self.cut: list[tuple[float, float]] = []  # (epoch s, kW below baseline)
        self.tw.after_step.append(self._record)
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _record(self, tw):
        bat, flex = tw.fleets["bat"], tw.fleets["flex"]
        cut = -float(bat.p_kw.sum()) + float((flex.p_base_kw - flex.p_kw).sum())
        self.cut.append((self.t0 + tw.t_s, cut))

    def _run(self):
        end = self.tw.scenario.duration_s
        while not self._stop.is_set():
            self.host.step(min(time.time() - self.t0, end))
            self._stop.wait(0.2)

    def stop(self):
        self._stop.set()
        self.thread.join(5)
        self.host.stop()


def service_config(tmp_path, rows, vtn_url, api_port) -> Path:
    by = {}
    for r in rows:
        by.setdefault(r["group"], []).append(r)
    rtu = by["rtu"][0]
    cfg = {"name": "e2e", "cycle_s": CYCLE_S,
           "devices": [{"group": g, "kind": kind, "ports": [r["port"] for r in by[g]],
                        "buses": [r["bus"] for r in by[g]]}
                       for g, kind in (("bat", "battery"), ("flex", "flex_load"), ("meter", "meter"))],
           "iec104": [{"group": "rtu", "port": rtu["port"], "common_address": rtu["unit"], "stale_s": 30}],
           "feeder": {"kind": "cigre_lv", "limits": {"v_min_pu": 0.9, "v_max_pu": 1.1}},
           "openadr": {"vtn_url": vtn_url, "ven_name": "gridtwin-vpp", "poll_s": 1, "retry_s": 1,
                       "down_after_s": 3, "start_timeout_s": 5, "report_sampling_s": 1},
           "link": {"timeout_s": 0.5, "backoff_s": 0.5, "backoff_max_s": 2},
           "historian": {"path": str(tmp_path / "hist.sqlite"), "synchronous": "NORMAL",
                         "telemetry_every_s": 1},
           "api": {"port": api_port}}
    p = tmp_path / "service.yaml"
    p.write_text(yaml.safe_dump(cfg))
    return p


@pytest.fixture
def world(tmp_path):
    start = datetime.now(UTC).replace(microsecond=0)
    rt = RealTimeTwin(start)
    vtn = Vtn()
    port = free_port()
    cfg = service_config(tmp_path, rt.rows, vtn.url, port)
    log = open(tmp_path / "service.log", "w")  # noqa: SIM115 - closed after the process ends
    env = {**os.environ, "GRIDTWIN_API_TOKENS": "op-tok:op:operator,view-tok:viewer:viewer"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "gridtwin"), "controller", "serve",
                             "--config", str(cfg)], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=3.0,
                       headers={"Authorization": "Bearer view-tok"})
    try:
        yield rt, vtn, proc, api, tmp_path / "service.log"
    finally:
        api.close()
        stop(proc)
        log.close()
        vtn.stop()  # idempotent: the test stops it itself
        rt.stop()


def get(api, path):
    try:
        r = api.get(path)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


def events_by_id(api) -> dict:
    return {e["id"]: e for e in get(api, "/api/dr/events") or []}


def test_vtn_event_is_served_by_the_field_service(world):
    rt, vtn, proc, api, log = world
    # up: API answering, cycles running with the fleet seen, VEN registered
    ok = wait_for(lambda: proc.poll() is None and (f := get(api, "/api/fleet")) is not None
                  and f["margin"]["margin_kw"] > 2 * REQ_KW and f["groups"]["bat"]["usable"] == 4,
                  timeout_s=40, step_s=0.25)
    assert ok, f"service not up (rc={proc.poll()}): {log.read_text()[-2000:]}"
    margin = get(api, "/api/fleet")["margin"]["margin_kw"]
    assert wait_for(lambda: any(e["kind"] == "openadr_registered" for e in
                                get(api, "/api/history/events") or []), timeout_s=10), log.read_text()[-2000:]
    assert get(api, "/api/grid")["v_min_pu"] == 0.9  # the feeder model from the config
    assert get(api, "/api/gate/summary")["gate"] == "SafetyGate"

    now = datetime.now(UTC).replace(microsecond=0)
    start = now + timedelta(seconds=5)
    vtn.add_event("E1", -REQ_KW, start, minutes=EVENT_S / 60)
    vtn.add_event("BIG", -(margin + 50.0), start, minutes=EVENT_S / 60)
    vtn.add_event("LATER", -10.0, now + timedelta(hours=1), minutes=30)
    assert wait_for(lambda: len(vtn.opts) >= 3, timeout_s=10), vtn.opts
    assert sorted(vtn.opts) == [(VEN_ID, "BIG", "optOut"), (VEN_ID, "E1", "optIn"),
                                (VEN_ID, "LATER", "optIn")]
    evs = events_by_id(api)
    e1, big = evs["oadr:E1"], evs["oadr:BIG"]
    assert (e1["source"], e1["opt"], e1["reduction_kw"]) == ("openadr", "in", REQ_KW)
    assert e1["start_t"] == start.timestamp() and e1["duration_s"] == pytest.approx(EVENT_S)
    assert (big["source"], big["opt"]) == ("openadr", "out")

    vtn.cancel_event("LATER")  # the VTN withdraws the later event
    assert wait_for(lambda: events_by_id(api)["oadr:LATER"]["status"] == "cancelled", timeout_s=10)

    end_t = start.timestamp() + EVENT_S
    assert wait_for(lambda: events_by_id(api)["oadr:E1"]["status"] == "completed",
                    timeout_s=EVENT_S + 20), events_by_id(api)["oadr:E1"]
    # ground truth from the twin: the emulated fleet's power below its own baseline
    cut = np.array([c for t, c in rt.cut if start.timestamp() + 6 <= t < end_t - 1])
    pre = np.array([c for t, c in rt.cut if start.timestamp() - 3 <= t < start.timestamp()])
    assert len(cut) >= 8 and np.abs(pre).max() < 1.0, (pre, cut)
    print(f"twin: cut {cut.mean():.2f} kW mean (min {cut.min():.2f}, max {cut.max():.2f}) for "
          f"{REQ_KW} kW requested over {len(cut)} s: {np.round(cut, 1).tolist()}")
    assert abs(cut.mean() - REQ_KW) <= TOL * REQ_KW, cut
    assert abs(np.median(cut) - REQ_KW) <= 0.05 * REQ_KW, cut
    e1 = events_by_id(api)["oadr:E1"]
    assert abs(e1["delivery_pct"] - 100.0) <= 100 * TOL + 5, e1  # controller's metered view
    # a fresh historian has no 10 prior days: the record says so and falls back
    assert (e1["baseline_method"], e1["baseline_days"]) == ("device-level", 0), e1
    assert e1["assessed_delivered_kw"] == e1["delivered_kw"]
    big = events_by_id(api)["oadr:BIG"]
    assert big["cycles"] == 0 and big["delivered_kw"] == 0.0  # opted out: never dispatched
    done = [e for e in get(api, "/api/history/events?limit=1000")
            if e["kind"] == "dr_event_completed" and '"oadr:E1"' in e["data"]]
    assert done and '"baseline_method": "device-level"' in done[0]["data"]
    # the VEN's telemetry report (delivered kW) reached the VTN during the event
    assert any(abs(v - REQ_KW) <= 0.25 * REQ_KW for _, v in vtn.reports), vtn.reports[-10:]

    # the VTN goes away: an alarm, and the cycle goes on
    vtn.stop()
    c0 = get(api, "/api/fleet")["cycle"]["cycle"]
    assert wait_for(lambda: any(a["kind"] == "openadr_down" for a in
                                get(api, "/api/alarms?active=true") or []), timeout_s=15)
    assert wait_for(lambda: get(api, "/api/fleet")["cycle"]["cycle"] >= c0 + 2, timeout_s=10)
    assert proc.poll() is None
