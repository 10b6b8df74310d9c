"""Builds the real controller (controller.core.Controller) inside the HIL controller process:
protocol links to the endpoint table, historian in the run's state directory (so a restarted
process resumes), the scenario's DR events, the battery scheduler, the safety gate.

Mirrors hil/direct.py (the in-process wiring) so the only difference between a direct run
and a HIL run is the links and the process boundary.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from controller.assembly import Spec, assemble
from controller.clock import SteppedClock
from controller.historian import Historian
from hil.agent import TimingLink
from hil.direct import feeder_model
from hil.recorder import RecordFile, RecordingLink


def _scenario(init: dict):
    from scenarios.model import Scenario

    s = Scenario.model_validate(init["scenario"])
    if init.get("scenario_dir"):
        s._source_dir = Path(init["scenario_dir"])
    return s


def make_links(endpoints: list[dict], clock) -> dict[str, object]:
    """{link name: DeviceLink} for the endpoint rows, one link per protocol (and host group)."""
    by_proto: dict[str, list[dict]] = {}
    for r in endpoints:
        by_proto.setdefault(r["protocol"], []).append(r)
    links = {}
    if by_proto.get("modbus"):
        from controller.links.modbus import ModbusLink

        plain = [r for r in by_proto["modbus"] if not r.get("secure")]
        if plain:
            links["modbus"] = ModbusLink.from_endpoints(plain, clock)
        secure: dict[str, list[dict]] = {}  # writes through a command gateway, one link per gateway
        for r in by_proto["modbus"]:
            if r.get("secure"):
                secure.setdefault(str(r["secure"].get("gateway")), []).append(r)
        if secure:
            from controller.links.secure import secure_link_from_config

            for gw, rows in secure.items():
                links[f"secure@{gw}"] = secure_link_from_config(ModbusLink.from_endpoints(rows, clock),
                                                                rows[0]["secure"])
    if any(r.get("secure") for r in by_proto.get("iec104", [])):
        raise ValueError("endpoint table: 'secure' (command gateway) is for modbus endpoints only")
    if by_proto.get("iec104"):
        from controller.links.iec104 import Iec104Link

        links["iec104"] = Iec104Link.from_endpoints(by_proto["iec104"], clock)
    unknown = set(by_proto) - {"modbus", "iec104"}
    if unknown:
        raise ValueError(f"endpoint table: unknown protocol(s) {sorted(unknown)}")
    return links


class HilController:
    """What the agent drives: one cycle per tick (lockstep) or its own loop (real time)."""

    def __init__(self, init: dict, link_factory=make_links, settings: dict | None = None):
        self.init = init
        self.s = s = _scenario(init)
        self.start_epoch = float(init["start_epoch"])
        self.clock = SteppedClock(self.start_epoch)
        self.rec = None
        if init.get("record"):
            self.rec = RecordFile(init["record"], append=bool(init.get("restart")))
        raw = link_factory(init["endpoints"], self.clock)
        self.timing = {n: TimingLink(self._wrap(l, n)) for n, l in raw.items()}
        state = Path(init["state_dir"])
        state.mkdir(parents=True, exist_ok=True)
        self.hist = Historian(state / "historian.sqlite", "NORMAL")
        groups = {}
        self._link_groups: dict[str, set] = {}
        for name, link in self.timing.items():
            for d in link.devices():
                groups.setdefault(d.group, link)
                self._link_groups.setdefault(name, set()).add(d.group)
        spec = Spec.from_scenario(s)
        spec.settings = dict(settings or {})  # replay of a changed controller version
        # DR events a restarted process resumes from the historian (before the spec's are added)
        self._restored = sorted(r["id"] for r in self.hist.dr_events(("pending", "active")))
        self.ctl = assemble(spec, groups, self.clock, self.hist, feeder_model(s), s.feeder.limits,
                            self._price_fn())
        self.avail = {n: {"cycles": 0, "unavailable_cycles": 0, "available_at_end": 0} for n in self.timing}

    def _wrap(self, link, name):
        return RecordingLink(link, self.rec, name, self.clock) if self.rec else link

    def _price_fn(self):
        """EUR/MWh at epoch times from the scenario's prices (the same file the twin reads; TOU
        hours on the scenario's local clock, as the twin's)."""
        from scenarios.load import resolve_path
        from twin.profiles import Prices

        prices = Prices(self.s.prices, self.s.start, lambda p: resolve_path(self.s, p), self.s.timezone)
        t0 = self.start_epoch
        return lambda times: np.array([prices.at(float(x) - t0) for x in times])

    # --- agent interface -------------------------------------------------------------------------
    def device_count(self) -> int:
        return sum(g.n for g in self.ctl.state.groups.values())

    def link_names(self) -> list[str]:
        return sorted(self.timing)

    def restored(self) -> dict:
        return {"dr_events": self._restored, "cycle": self.ctl.n_cycle}

    def record_channel(self, direction, msg, wall_t) -> None:
        if self.rec:
            self.rec.channel_hook(direction, msg, wall_t)

    def _io(self):
        return (sum(l.io_s for l in self.timing.values()), sum(l.reads for l in self.timing.values()),
                sum(l.writes for l in self.timing.values()))

    def cycle_at(self, t: float) -> dict:
        self.clock.advance_to(t)
        io0, r0, w0 = self._io()
        a = time.perf_counter()
        self.ctl.cycle(t)
        ms = 1e3 * (time.perf_counter() - a)
        self._count_availability()
        io1, r1, w1 = self._io()
        return {"cycle_ms": round(ms, 3), "io_ms": round(1e3 * (io1 - io0), 3), "reads": r1 - r0,
                "writes": w1 - w0}

    def _count_availability(self) -> None:
        """Per link: cycles in which some of its devices were unavailable (comm-loss KPIs)."""
        for name, link in self.timing.items():
            groups = self._link_groups.get(name, set())
            ok = all(self.ctl.state.groups[g].available.all() for g in groups if g in self.ctl.state.groups)
            a = self.avail[name]
            a["cycles"] += 1
            a["unavailable_cycles"] += 0 if ok else 1
            a["available_at_end"] = int(ok)

    def command(self, name: str, reason: str = "") -> dict:
        if name == "emergency_shed":
            return self.ctl.set_emergency(True, by="hil", reason=reason)
        if name == "emergency_restore":
            return self.ctl.set_emergency(False, by="hil", reason=reason)
        raise ValueError(f"unknown command {name!r}")

    def start_wall_clock(self, wall0: float) -> None:
        from hil.realtime import ScenarioWallClock

        wc = ScenarioWallClock(self.start_epoch, wall0, float(self.init.get("speed") or 1.0))
        self.clock.advance_to(wc.now())
        self.wall_clock = wc

    def run_realtime(self, stop: threading.Event) -> None:
        """The controller's own loop on the scenario wall clock (Controller.run semantics)."""
        wc = self.wall_clock
        p = self.s.controller.cycle_s
        nxt = np.ceil((wc.now() - self.start_epoch) / p + 1e-9) * p + self.start_epoch
        self.late_ms: list[float] = []
        while not stop.is_set():
            if not wc.sleep_until(nxt, timeout_s=0.25):
                continue
            now = wc.now()
            self.late_ms.append(1e3 * (now - nxt) / wc.speed)
            if now - nxt > p:  # overran: skip missed slots, never queue them
                nxt = self.start_epoch + np.floor((now - self.start_epoch) / p) * p
            self.cycle_at(max(nxt, self.clock.now()))
            nxt += p

    def kpis(self) -> dict:
        k = self.ctl.kpis()
        io, r, w = self._io()
        k.update({"link_io_s": round(io, 3), "link_reads": r, "link_writes": w,
                  "restored_dr_events": self._restored})
        late = getattr(self, "late_ms", None)
        if late:
            k["cycle_lateness_p50_ms"] = round(float(np.percentile(late, 50)), 3)
            k["cycle_lateness_max_ms"] = round(float(np.max(late)), 3)
        out = {"controller": k, "dr": self.ctl.dr_summary()}
        out["links"] = {n: dict(a) for n, a in self.avail.items()}
        return out

    def close(self) -> None:
        for link in self.timing.values():
            try:
                link.close()
            except Exception:
                pass
        if self.rec:
            self.rec.close()


def build_controller(init: dict) -> HilController:
    return HilController(init)
