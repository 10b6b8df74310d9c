"""One HIL run's moving parts in the coordinator process: the twin, its protocol emulators,
the hardware bridge, and the controller process; shared by lockstep and real-time modes."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from hil.controller_process import ControllerProcess


class HilError(RuntimeError):
    """A HIL run could not be set up or its controller process failed (one line, actionable)."""


def endpoint_rows(table) -> list[dict]:
    """The emulator host's endpoint table as plain dicts (device_id, protocol, host, port, unit, map)."""
    rows = []
    for r in table or []:
        d = dict(r) if isinstance(r, dict) else dict(vars(r)) if hasattr(r, "__dict__") else dict(r._asdict())
        rows.append({k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
                     for k, v in d.items()})
    return rows


class HilSession:
    """Build with a validated Scenario and an output folder; `open()`, run a mode, `close()`."""

    def __init__(self, scenario, out_dir: str | Path, controller: bool | None = None,
                 record: bool = True, emulate: bool = True):
        self.scenario = scenario
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        self.with_controller = scenario.controller.enabled if controller is None else controller
        self.record = record
        self.emulate = emulate
        self.twin = None
        self.host = None
        self.bridge = None
        self.endpoints: list[dict] = []
        self.ctl: ControllerProcess | None = None
        self.controller_kpis: dict = {}

    # --- twin side ---------------------------------------------------------------------------
    def open(self):
        from twin.simulation import Twin

        self.twin = Twin(self.scenario)
        (self.out / "scenario.json").write_text(self.scenario.model_dump_json(indent=1))
        from hil.bridge import attach_bridge

        self.bridge = attach_bridge(self.twin)  # groups with a real endpoint: measured, not emulated
        if self.emulate and self._needs_emulators():
            try:
                from device_emulators import EmulatorHost
            except ImportError as e:
                raise HilError(f"device emulators not available ({e}); install/land device_emulators") from None
            self.host = EmulatorHost(self.twin, skip_groups=sorted(self.bridge.groups))
            self.endpoints = endpoint_rows(self.host.start())
        self.endpoints += self.bridge.endpoint_rows()
        return self

    def _needs_emulators(self) -> bool:
        emulated = [g for g in self.scenario.fleet if g.endpoint == "emulated" and g.link != "direct"]
        return bool(emulated) or self.with_controller

    @property
    def lock(self):
        return getattr(self.host, "lock", None) or nullcontext()

    # --- controller side ---------------------------------------------------------------------
    def controller_init(self, mode: str, wall0: float | None = None, speed: float = 1.0) -> dict:
        s = self.scenario
        return {
            "scenario": s.model_dump(mode="json"),
            "scenario_dir": str(getattr(s, "_source_dir", None) or ""),
            "start_epoch": s.start.timestamp(),
            "mode": mode,
            "wall0": wall0,
            "speed": speed,
            "endpoints": self.endpoints,
            "record": str(self.out / "links.jsonl") if self.record else None,
            "state_dir": str(self.out / "controller_state"),
        }

    def start_controller(self, mode: str, wall0: float | None = None, speed: float = 1.0) -> dict:
        self.ctl = ControllerProcess(self.controller_init(mode, wall0, speed), self.out / "controller.log")
        return self._start()

    def _start(self) -> dict:
        from hil.protocol import ChannelError

        try:
            return self.ctl.start()
        except ChannelError as e:
            tail = self.ctl.log_tail(8)
            raise HilError(f"controller process failed to start: {e}\n{tail}") from None

    def restart_controller(self, t_s: float, reason: str = "") -> dict:
        """kill -9 the controller process and start a fresh one on the same state directory."""
        self.ctl.kill()
        self.twin.events.log(t_s, "controller_killed", reason=reason or "scenario action")
        t0 = time.perf_counter()
        ready = self._start()
        self.twin.events.log(t_s, "controller_restarted", startup_s=round(time.perf_counter() - t0, 3))
        return ready

    # --- end ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self.ctl is not None:
            try:
                bye = self.ctl.stop()
                self.controller_kpis = bye.get("kpis", {}) or {}
            except Exception as e:  # a dead controller must not lose the twin's results
                self.twin.events.log(self.twin.t_s, "controller_stop_failed", error=str(e))
                self.ctl.kill()
            self.ctl = None
        if self.host is not None:
            self.host.stop()
            self.host = None
        if self.bridge is not None:
            self.bridge.close()

    def write_results(self, wall_s: float, hil_kpis: dict) -> dict:
        from twin.results import write_results

        tw = self.twin
        for k, v in self.controller_kpis.items():
            tw.kpi_extra.setdefault(k, v)
        if self.bridge is not None and self.bridge.groups:
            hil_kpis["bridge"] = self.bridge.kpis()
        tw.kpi_extra["hil"] = hil_kpis
        return write_results(tw, self.out, wall_s)
