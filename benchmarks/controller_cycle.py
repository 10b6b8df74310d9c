"""Controller cycle under load (issue 17), everything over real sockets on 127.0.0.1:

A. Read load: the controller and its API in one process (as `gridtwin controller serve`), a
   separate load process with 20 viewer clients (a third looping on
   /api/history/telemetry?limit=100000, the rest on /api/fleet and /api/devices) against a
   historian holding 200k telemetry rows. Mean cycle time and emergency shed latency (POST ->
   every battery holds the shed setpoint, read back) idle vs loaded, in the same run.
B. Acquisition: cycle time with 200 and 1,000 emulated SunSpec batteries (5 ms answer latency,
   one port each), concurrent polling vs the sequential acquisition (workers=1), same run.

Run: .venv/bin/python benchmarks/controller_cycle.py [--quick]   (about a minute or two)
"""

from __future__ import annotations

import argparse
import logging
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from controller.api import create_app
from controller.clock import SteppedClock, WallClock
from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.historian import Historian
from controller.links.modbus import ModbusLink
from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin

TOKEN = "bench-viewer"
OPERATOR = "bench-operator"

LOAD = r"""
import sys, threading, time, httpx
url, tok, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
done = [0, 0]
end = time.monotonic() + seconds
def client(k):
    paths = ["/api/history/telemetry?limit=100000"] if k % 3 == 0 else ["/api/fleet", "/api/devices"]
    with httpx.Client(base_url=url, headers={"Authorization": "Bearer " + tok}, timeout=120) as c:
        i = 0
        while time.monotonic() < end:
            r = c.get(paths[i % len(paths)]); i += 1
            done[0 if k % 3 == 0 else 1] += 1
ts = [threading.Thread(target=client, args=(k,)) for k in range(20)]
[t.start() for t in ts]; [t.join() for t in ts]
print(done[0], done[1])
"""


def scenario(n_bat: int, name: str) -> Scenario:
    return Scenario.model_validate({
        "name": name, "start": "2026-06-21T12:00:00Z", "duration_s": 3600, "seed": 1, "device_step_s": 1,
        "power_flow_interval_s": 60, "feeder": {"kind": "cigre_lv"},
        "fleet": [{"name": "bat", "kind": "battery", "count": n_bat,
                "params": {"e_cap_kwh": 20, "p_max_kw": 10, "soc_init_pct": 70}}],
        "outputs": {"report": False}})


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shed_latency(ctl, http, ids: list[str]) -> tuple[float, float]:
    """(POST response ms, ms until every battery confirmed the -p_max setpoint); `http` is an
    open httpx.Client (a new one costs ~0.3 s of TLS context setup, even for plain HTTP)."""
    t0 = time.perf_counter()
    r = http.post("/api/emergency/shed", json={"reason": "bench"})
    t_post = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    while True:
        sent = dict(ctl.last_sent)
        if all(sent.get((d, "p_set_kw"), (0.0,))[0] <= -9.99 for d in ids):
            break
        time.sleep(0.002)
    t_dev = time.perf_counter() - t0
    http.post("/api/emergency/restore")
    return 1e3 * t_post, 1e3 * t_dev


def part_a(seconds: float, tmp: Path) -> dict:
    import uvicorn

    tw = Twin(scenario(4, "bench_api"))
    host = EmulatorHost(tw, rtu=False)
    rows = [r for r in host.start() if r["protocol"] == "modbus"]
    hist_path = tmp / "historian.sqlite"
    h = Historian(hist_path, "NORMAL")
    h._tx(lambda db: db.executemany("INSERT INTO telemetry VALUES (?,?,?,?,?,?)",
                                    ((0, float(i), f"bat/{i % 4}", "p_kw", 1.0, "good") for i in range(200_000))))
    h.close()
    clock = WallClock()
    link = ModbusLink(rows, clock, timeout_s=0.5, poll_s=1.0)
    ctl = Controller({"bat": link, "meter": link}, clock, gate=PassThroughGate(),
                     historian=Historian(hist_path, "NORMAL"),
                     settings=CycleSettings(cycle_s=1.0, telemetry_every_s=1.0))
    stop = threading.Event()
    th = threading.Thread(target=ctl.run, args=(stop,), daemon=True)
    th.start()
    app = create_app(ctl, {TOKEN: {"user": "v", "role": "viewer"}, OPERATOR: {"user": "o", "role": "operator"}})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    threading.Thread(target=server.run, daemon=True).start()
    api = f"http://127.0.0.1:{port}"
    import httpx

    http = httpx.Client(base_url=api, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=120)
    ids = [r["device_id"] for r in rows if r["kind"] == "battery"]
    while not server.started:
        time.sleep(0.05)
    time.sleep(2.0)
    out = {}
    try:
        n0 = len(ctl.cycle_ms)
        time.sleep(seconds)
        out["cycle_ms_idle"] = float(np.mean(ctl.cycle_ms[n0:]))
        out["shed_post_ms_idle"], out["shed_devices_ms_idle"] = shed_latency(ctl, http, ids)
        time.sleep(2.0)
        load = subprocess.Popen([sys.executable, "-c", LOAD, api, TOKEN, str(seconds + 4)],
                                stdout=subprocess.PIPE, text=True)
        time.sleep(2.0)
        n0 = len(ctl.cycle_ms)
        time.sleep(seconds / 2)
        out["shed_post_ms_loaded"], out["shed_devices_ms_loaded"] = shed_latency(ctl, http, ids)
        time.sleep(seconds / 2)
        out["cycle_ms_loaded"] = float(np.mean(ctl.cycle_ms[n0:]))
        out["cycle_ms_loaded_max"] = float(np.max(ctl.cycle_ms[n0:]))
        hist_reads, other_reads = map(int, load.communicate(timeout=300)[0].split())
        out["load_requests"] = {"history_100k": hist_reads, "fleet_devices": other_reads}
    finally:
        http.close()
        server.should_exit = True
        stop.set()
        th.join(10)
        link.close()
        host.stop()
    return out


def part_b(counts, latency_s: float) -> dict:
    out = {}
    for n in counts:
        for attempt in range(5):  # a port picked for an emulator can be taken before it binds
            tw = Twin(scenario(n, f"bench_{n}"))
            host = EmulatorHost(tw, rtu=False, meter=False)
            try:
                rows = [r for r in host.start() if r["protocol"] == "modbus"]
                break
            except OSError:
                host.stop()
                if attempt == 4:
                    raise
        try:
            res = {}
            for mode, workers in (("concurrent", 32), ("sequential", 1)):
                clock = SteppedClock(tw.scenario.start.timestamp())
                for d in host.devices.values():
                    d.latency_s = 0.0  # discovery at loopback speed; the polls below pay the latency
                link = ModbusLink(rows, clock, timeout_s=5.0, poll_s=1.0, workers=workers,
                                  deadline_s=120.0, max_failures=3)
                ctl = Controller({"bat": link}, clock, gate=PassThroughGate(),
                                 settings=CycleSettings(cycle_s=1.0))
                for d in host.devices.values():
                    d.latency_s = latency_s
                ms = []
                for k in range(1 if (mode == "sequential" and n >= 1000) else 2):
                    clock.advance(1.0)
                    rep = ctl.cycle()
                    ms.append(rep["total_ms"])
                res[mode] = round(float(np.mean(ms)), 1)
                res[mode + "_answered"] = int(ctl.state.groups["bat"].usable().sum())
                link.close()
            res["speedup"] = round(res["sequential"] / res["concurrent"], 1)
            out[n] = res
        finally:
            host.stop()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="shorter windows, 200 devices only")
    ap.add_argument("--seconds", type=float, default=8.0, help="idle and loaded window each")
    ap.add_argument("--part", choices=["a", "b", "both"], default="both")
    args = ap.parse_args()
    logging.basicConfig(level=logging.CRITICAL)
    import tempfile

    if args.part in ("a", "both"):
        with tempfile.TemporaryDirectory() as tmp:
            report_a(part_a(4.0 if args.quick else args.seconds, Path(tmp)))
    if args.part in ("b", "both"):
        report_b(part_b((200,) if args.quick else (200, 1000), 0.005))
    return 0


def report_a(a: dict) -> None:
    print("A. read load (cycle 1 s, 4 batteries + meter, 20 viewers, 200k telemetry rows)")
    print(f"   mean cycle   idle {a['cycle_ms_idle']:8.1f} ms   loaded {a['cycle_ms_loaded']:8.1f} ms "
          f"(x{a['cycle_ms_loaded'] / a['cycle_ms_idle']:.2f}; loaded max {a['cycle_ms_loaded_max']:.0f} ms)")
    print(f"   shed POST    idle {a['shed_post_ms_idle']:8.1f} ms   loaded {a['shed_post_ms_loaded']:8.1f} ms")
    print(f"   shed on devices (setpoints confirmed) idle {a['shed_devices_ms_idle']:.0f} ms, "
          f"loaded {a['shed_devices_ms_loaded']:.0f} ms")
    print(f"   load served: {a['load_requests']}", flush=True)


def report_b(b: dict) -> None:
    print("B. cycle time vs Modbus device count (5 ms answer latency per request)")
    for n, r in b.items():
        print(f"   {n:5d} devices: concurrent {r['concurrent']:8.1f} ms   sequential {r['sequential']:8.1f} ms"
              f"   x{r['speedup']}   (answering: {r['concurrent_answered']} / {r['sequential_answered']})")


if __name__ == "__main__":
    sys.exit(main())
