"""Hardware bridge: fleet groups whose scenario endpoint is a real device ({host, port, unit,
map}) are not emulated; the twin reads their measurements back through the controller's own
DeviceLink code (ModbusLink) and its feeder sees the measured P/Q at their buses.

The group's fleet object stays (kind, bus, KPIs, recorder columns) but its physics step is
replaced by "copy the latest measurement"; polls happen just before each power flow, which is
the only place the twin consumes the value. A device that stops answering keeps its last
good value, is counted and logged ('bridge_stale'), and the run goes on.
"""

from __future__ import annotations

import numpy as np

from controller.clock import Clock
from controller.links.base import Quality


class _TwinClock(Clock):
    """The twin's simulated time as a controller Clock (for link timestamps)."""

    def __init__(self, twin):
        self.twin = twin
        self.start = twin.scenario.start.timestamp()

    def now(self) -> float:
        return self.start + self.twin.t_s

    def sleep_until(self, t: float, timeout_s: float | None = None) -> bool:
        return self.now() >= t


def real_endpoint_rows(scenario) -> list[dict]:
    """Endpoint table rows (same shape as the emulator host's) for every real device."""
    rows = []
    for g in scenario.fleet:
        ep = g.endpoint
        if ep == "emulated":
            continue
        for i in range(g.count):
            rows.append({"device_id": f"{g.name}/{i}", "group": g.name, "kind": g.kind,
                         "protocol": "modbus", "host": ep.host, "port": ep.port, "unit": ep.unit + i,
                         "map": ep.map, "real": True})
            if getattr(ep, "secure", None) is not None:
                rows[-1]["secure"] = _secure_row(scenario, ep.secure)
    return rows


def _secure_row(scenario, sec) -> dict:
    """The endpoint row's `secure` block with key paths made absolute (scenario-relative)."""
    from scenarios.load import resolve_path

    row = sec.model_dump()
    for k in ("key_file", "gateway_pubkey_file"):
        if row.get(k):
            row[k] = str(resolve_path(scenario, row[k]))
    return row


def make_modbus_link(rows: list[dict], clock):
    """A ModbusLink over endpoint rows (the controller's link code, not a copy of it)."""
    from controller.links.modbus import ModbusLink

    return ModbusLink.from_endpoints(rows, clock)


class BridgedFleet:
    """Stands in for a fleet whose devices are real: step() copies measured P/Q into it."""

    polls_at_power_flow = True  # the twin runs the power-flow step alone, at its own time

    def __init__(self, inner, bridge, group: str):
        self.inner, self.bridge, self.group = inner, bridge, group

    def step(self, dt_s, amb) -> None:
        tw = self.bridge.twin
        if tw.step_index % tw.pf_every == 0:
            self.bridge.poll(self.group)
        p, q = self.bridge.measured[self.group]
        self.inner.p_kw[:] = p
        self.inner.q_kvar[:] = q

    def integrate(self, dt_s) -> None:
        self.inner.integrate(dt_s)

    def advance(self, dt_s, ambs) -> None:
        """A batch of steps between power flows: the measured values hold (no physics)."""
        for amb in ambs:
            self.step(dt_s, amb)
            self.integrate(dt_s)

    def __getattr__(self, attr):
        return getattr(self.inner, attr)


class Bridge:
    def __init__(self, twin, link_factory=make_modbus_link):
        self.twin = twin
        self.rows = real_endpoint_rows(twin.scenario)
        self.groups = sorted({r["group"] for r in self.rows})
        self.link = link_factory(self.rows, _TwinClock(twin)) if self.rows else None
        self.measured: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.polls = 0
        self.stale_polls = 0
        self._stale: set[str] = set()
        for g in self.groups:
            f = twin.fleets[g]
            self.measured[g] = (np.zeros(f.n), np.zeros(f.n))
            twin.fleets[g] = BridgedFleet(f, self, g)

    def endpoint_rows(self) -> list[dict]:
        return list(self.rows)

    def poll(self, group: str) -> None:
        """Read the group's devices once; hold last good values for devices that fail."""
        data = self.link.read()
        self.polls += 1
        p, q = self.measured[group]
        n = len(p)
        for i in range(n):
            dev = f"{group}/{i}"
            vals = data.get(dev, {})
            vp, vq = vals.get("p_kw"), vals.get("q_kvar")
            ok = vp is not None and Quality(vp.quality) == Quality.GOOD and np.isfinite(vp.value)
            if ok:
                p[i] = vp.value
                if vq is not None and Quality(vq.quality) == Quality.GOOD and np.isfinite(vq.value):
                    q[i] = vq.value
                if dev in self._stale:
                    self._stale.discard(dev)
                    self.twin.events.log(self.twin.t_s, "bridge_recovered", device=dev)
            else:
                self.stale_polls += 1
                if dev not in self._stale:
                    self._stale.add(dev)
                    self.twin.events.log(self.twin.t_s, "bridge_stale", device=dev,
                                         held_p_kw=float(p[i]))

    def kpis(self) -> dict:
        return {"groups": self.groups, "devices": len(self.rows), "polls": self.polls,
                "stale_polls": self.stale_polls}

    def close(self) -> None:
        if self.link is not None:
            self.link.close()


def attach_bridge(twin, link_factory=make_modbus_link) -> Bridge:
    return Bridge(twin, link_factory)
