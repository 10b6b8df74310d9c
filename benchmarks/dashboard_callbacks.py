"""Dashboard live callbacks' server time with 1,000 devices, beside the raw controller API fetch
time measured in the same run.

A real controller API (twin + in-process controller + controller.api under uvicorn on
127.0.0.1, as in tests/live_rig.py) serves 1,000 devices (250 each of battery,
EV, PV, flexible load). The dashboard's callbacks are invoked through Dash's own HTTP endpoint
(/_dash-update-component, Flask test client), so the figures include JSON encoding of the
response. Baseline: the same API GETs the refresh callback needs, issued directly with httpx.

Run: .venv/bin/python benchmarks/dashboard_callbacks.py [--n 1000] [--repeat 100]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import httpx
import numpy as np
from live_rig import OPERATOR, LiveRig


def stats_ms(xs: list[float]) -> tuple[float, float]:
    a = np.asarray(xs) * 1e3
    return float(np.median(a)), float(np.percentile(a, 99))


def callback_body(app, output_key: str, values: dict) -> dict:
    """The JSON Dash's renderer POSTs for the callback whose output key is `output_key`."""
    cb = app.callback_map[output_key]
    outs = [{"id": o.split(".")[0], "property": o.split(".")[1]}
            for o in output_key.strip(".").split("...")]
    inputs = [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in cb["inputs"]]
    state = [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in cb["state"]]
    return {"output": output_key, "outputs": outs if len(outs) > 1 else outs[0], "inputs": inputs,
            "state": state, "changedPropIds": [f"{inputs[0]['id']}.{inputs[0]['property']}"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000, help="devices (split over 4 classes)")
    ap.add_argument("--repeat", type=int, default=100)
    args = ap.parse_args()
    import logging

    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    from dashboard.app import create_app
    from dashboard.live_view import LiveSnapshot

    q = args.n // 4
    rig = LiveRig(Path(tempfile.mkdtemp()), n_bat=q, n_ev=q, n_pv=q, n_flex=args.n - 3 * q, dr_kw=50.0)
    rig.twin.run_until(30 * 60)  # half an hour in: DR event active, 30 cycles of history
    rig.start(drive=False)
    try:
        n_dev = rig.controller.state.device_count()
        app = create_app(api_url=rig.url, refresh_ms=1000)
        flask = app.server.test_client()
        if flask.post("/login", data={"user": "olivia", "token": OPERATOR}).status_code != 303:
            raise SystemExit("dashboard login as olivia failed")
        keys = {k: k for k in app.callback_map}
        refresh_key = next(k for k in keys if "live-status.children" in k)
        devices_key = next(k for k in keys if "live-devices.data" in k)
        refresh = callback_body(app, refresh_key, {"live-interval.n_intervals": 1})
        devices = callback_body(app, devices_key, {
            "live-devices.page_current": 3, "live-devices.page_size": 20, "live-dev-filter.value": [],
            "live-interval.n_intervals": 1})

        # raw API: the GETs one refresh needs, one after another and concurrently as the view does
        paths = ["/api/fleet", "/api/grid", "/api/head", "/api/dr/events", "/api/history/dr_performance",
                 "/api/alarms", "/api/gate", "/api/audit", "/api/devices?offset=60&limit=20"]
        raw_seq, raw_bytes = [], 0
        with httpx.Client(base_url=rig.url, headers={"Authorization": f"Bearer {OPERATOR}"},
                          timeout=10) as c:
            for p in paths:
                c.get(p)
            for _ in range(args.repeat):
                t0 = time.perf_counter()
                raw_bytes = sum(len(c.get(p).content) for p in paths)
                raw_seq.append(time.perf_counter() - t0)
        from concurrent.futures import ThreadPoolExecutor

        from dashboard import live_data as ld
        from dashboard.api_client import ApiClient

        snap = LiveSnapshot(ld.HeadHistory(), ThreadPoolExecutor(8))
        client = ApiClient(rig.url, OPERATOR)
        snap.fetch(client, "operator")
        raw_par = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            snap.fetch(client, "operator")
            raw_par.append(time.perf_counter() - t0)

        def run(body) -> tuple[list[float], int]:
            out, size = [], 0
            for i in range(args.repeat + 3):
                body["inputs"][-1]["value"] = i + 1
                t0 = time.perf_counter()
                r = flask.post("/_dash-update-component", json=body)
                dt = time.perf_counter() - t0
                if r.status_code != 200:
                    raise SystemExit(f"callback {body['output'][:40]} returned HTTP {r.status_code}: "
                                     f"{r.data[:300]!r}")
                size = len(r.data)
                if i >= 3:  # first calls warm the client's connection pool and caches
                    out.append(dt)
            return out, size

        cb_refresh, refresh_bytes = run(refresh)
        cb_devices, devices_bytes = run(devices)
        resp = json.loads(flask.post("/_dash-update-component", json=refresh).data)
        assert "live-oneline" in resp["response"] and "live-dr" in resp["response"]
    finally:
        rig.close()

    print(f"dashboard live callbacks, {n_dev} devices, {os.cpu_count()} cores, "
          f"{args.repeat} calls each (controller API on 127.0.0.1, twin paused)")
    rows = [("raw API GETs for one refresh, sequential (baseline)", raw_seq, raw_bytes),
            ("raw API GETs, concurrent as the view fetches them", raw_par, None),
            ("refresh callback (all panels) via /_dash-update-component", cb_refresh, refresh_bytes),
            ("device-table page callback (20 rows)", cb_devices, devices_bytes)]
    base = np.median(raw_seq)
    for name, xs, size in rows:
        med, p99 = stats_ms(xs)
        extra = f", response {size / 1024:.1f} KiB" if size is not None else ""
        print(f"  {name:60s} median {med:7.1f} ms  p99 {p99:7.1f} ms  "
              f"({np.median(xs) / base:4.2f}x baseline){extra}")
    med_total = np.median(cb_refresh) + np.median(cb_devices)
    print(f"  server time per 1 s refresh (refresh + device page): {1e3 * med_total:.1f} ms median "
          f"= {100 * med_total:.1f} % of the 1,000 ms interval")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
