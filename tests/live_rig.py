"""A real controller API on loopback for the dashboard's live tests and benchmark (no tests here).

The twin runs a short scenario in a background thread, a little faster than real time (one
controller cycle of simulated time per `wall_per_cycle_s`), with the in-process controller
(hil.direct.attach_controller) cycling on it; the controller's own FastAPI app
(controller.api.create_app) is served by uvicorn on a free 127.0.0.1 port.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

from ports import free_port

TOKENS = {"op-secret": {"user": "olivia", "role": "operator"},
          "view-secret": {"user": "victor", "role": "viewer"}}
OPERATOR, VIEWER = "op-secret", "view-secret"

SCENARIO = """
name: dash_live
start: 2026-01-15T16:00:00Z
duration_s: {duration_s}
seed: 3
feeder: {{kind: cigre_lv, limits: {{v_min_pu: 0.90, v_max_pu: 1.10}}}}  # EN 50160 LV band
fleet:
  - {{name: home_batteries, kind: battery, count: {n_bat}, params: {{e_cap_kwh: 10, p_max_kw: 4, soc_init_pct: 80}}}}
  - {{name: ev_chargers, kind: ev, count: {n_ev}, placement: {{rule: load_buses}},
     params: {{p_max_kw: 7.4, arrival_h_mean: 16.2}}}}
  - {{name: rooftop_pv, kind: pv, count: {n_pv}, params: {{p_peak_kw: 5, s_rated_kva: 6}}}}
  - {{name: flex, kind: flex_load, count: {n_flex}}}
dr_events: [{{id: evening, start: "2026-01-15T16:03:00Z", duration_s: 5400, reduction_kw: {dr_kw}}}]
controller: {{enabled: true, cycle_s: 60, optimize_every_s: 900, objective: dr}}
outputs: {{report: false}}
"""


class LiveRig:
    """Twin + in-process controller + its HTTP API; `url` once started, `close()` to stop."""

    def __init__(self, tmp: Path, n_bat=10, n_ev=10, n_pv=10, n_flex=10, dr_kw=8.0,
                 duration_s=6 * 3600, wall_per_cycle_s=0.4, cycle_s=60.0):
        from controller.api import create_app
        from hil.direct import attach_controller
        from scenarios.load import load_scenario
        from twin.simulation import Twin

        path = Path(tmp) / "dash_live.yaml"
        path.write_text(SCENARIO.format(duration_s=duration_s, n_bat=n_bat, n_ev=n_ev, n_pv=n_pv,
                                        n_flex=n_flex, dr_kw=dr_kw))
        self.twin = Twin(load_scenario(path))
        self.attached = attach_controller(self.twin)
        self.controller = self.attached.controller
        self.cycle_s = cycle_s
        self.wall_per_cycle_s = wall_per_cycle_s
        self.app = create_app(self.controller, TOKENS)
        self._stop = threading.Event()
        self._server = None
        self.url = ""

    def start(self, drive: bool = True) -> LiveRig:
        import uvicorn

        self.twin.run_until(2 * self.cycle_s)  # two cycles in: the API has data from the start
        port = free_port()
        self._server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=port,
                                                     log_level="warning", access_log=False))
        self._threads = [threading.Thread(target=self._server.run, name="api", daemon=True)]
        if drive:
            self._threads.append(threading.Thread(target=self._drive, name="twin", daemon=True))
        for t in self._threads:
            t.start()
        deadline = time.monotonic() + 15.0
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("controller API did not start within 15 s")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{port}"
        return self

    def _drive(self) -> None:
        t = self.twin.env.now
        while not self._stop.is_set() and t < self.twin.end_s:
            t += self.cycle_s
            self.twin.run_until(t)
            self._stop.wait(self.wall_per_cycle_s)

    def close(self) -> None:
        self._stop.set()
        if self._server is not None:
            self._server.should_exit = True
        for t in getattr(self, "_threads", []):
            t.join(timeout=15)
