"""EmulatorHost: every device of a twin behind its protocol, on loopback.

Modbus servers run on one asyncio loop in a background thread; the IEC 104 RTU runs on its
own asyncio thread (device_emulators.iec104). `lock` guards twin state: the code that steps the twin holds it while
stepping, the servers take it while they read or write twin arrays.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import zlib
from dataclasses import asdict, dataclass

import numpy as np

from device_emulators.devices import BusVoltage, EmulatedDevice, pf_to_q_gen_kvar
from device_emulators.modbus_server import ModbusEndpoint
from device_emulators.register_map import MAP_FOR_KIND

GATEWAY_UNITS = 247


@dataclass
class Endpoint:
    device_id: str
    group: str
    kind: str
    protocol: str  # modbus | iec104
    host: str
    port: int
    unit: int  # Modbus unit id, or the IEC 104 common address
    map: str
    bus: int | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def reserve_port(host: str) -> socket.socket:
    """A bound socket holding a kernel-chosen free port until the server takes it over."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((host, 0))
    return s


def head_rating_kva(net) -> float:
    """Full scale of the feeder-head meter: the feeder's transformer capacity (or 2x its load)."""
    sn = float(net.trafo.sn_mva.sum()) * 1000.0 if len(net.trafo) else 0.0
    return max(sn, 2000.0 * float(net.load.p_mw.abs().sum()), 100.0)


# full-load hours per year of a device's lifetime counters (into / out of the feeder side of it)
LIFETIME_H_PER_YEAR = {"pv": (4.0, 1050.0), "battery": (220.0, 200.0), "meter": (1500.0, 40.0)}


def lifetime_energy_wh(dev, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Energy counters (Wh absorbed, Wh delivered) a device has accumulated before the run: a
    seeded age of 0.5-8 years (meters 0.5-2, so 32-bit counters fit) at typical full-load hours."""
    f = dev.fleet
    n = f.n if f is not None else 1
    rng = np.random.default_rng([seed, zlib.crc32((f.name if f is not None else dev.device_id).encode())])
    years = rng.uniform(0.5, 2.0 if f is None else 8.0, n)
    if f is None:
        rating_kw = np.full(1, dev.rating_kva)
    else:
        rating_kw = np.asarray(getattr(f, "s_rated_kva", getattr(f, "p_max_kw", np.ones(n))), dtype=float)
    h_pos, h_neg = LIFETIME_H_PER_YEAR.get(dev.kind, (0.0, 0.0))
    return rating_kw * 1000.0 * h_pos * years, rating_kw * 1000.0 * h_neg * years


class EmulatorHost:
    """Start/stop the emulated devices of `twin`; `endpoints` is the table clients use."""

    def __init__(self, twin, skip_groups=(), host: str = "127.0.0.1", port_base: int | None = None,
                 rtu: bool = True, meter: bool = True, groups=None, start_timeout_s: float = 60.0,
                 idle_timeout_s: float = 60.0, meter_emulation=None, rtu_ssl_context=None):
        if not host.startswith("127."):
            raise ValueError(f"emulators bind loopback addresses only (127.0.0.0/8), not {host!r}")
        self.twin, self.host, self.port_base = twin, host, port_base
        self.idle_timeout_s = idle_timeout_s  # Modbus connections idle this long are closed
        self.lock = threading.RLock()
        self.devices: dict[str, EmulatedDevice] = {}
        self.endpoints: list[Endpoint] = []
        self._modbus: list[ModbusEndpoint] = []
        self._next_port = port_base
        self._held: list[socket.socket] = []
        self.rtu = None
        self.active_faults: dict[tuple[str, str], object] = {}  # (kind, target) -> value
        self.control = None  # device_emulators.control.ControlServer when asked for
        self._want_rtu = rtu
        self._rtu_ssl = rtu_ssl_context  # IEC 104 over TLS (device_emulators.iec104.server_tls_context)
        self._timeout = start_timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="emulators", daemon=True)
        skip = set(skip_groups)
        by_name = {g.name: g for g in twin.scenario.fleet}
        self._groups = by_name
        for name, fleet in twin.fleets.items():
            g = by_name.get(name)
            if name in skip or (groups is not None and name not in groups):
                continue
            if g is not None and g.endpoint != "emulated":
                continue  # a real device: the hardware bridge reads it, we don't emulate it
            self._add_group(name, fleet, gateway=bool(g and g.gateway))
        if meter:
            # the head meter belongs to no fleet group: meter_emulation (a scenarios.model.Emulation)
            # sets its identity, noise and refresh; None takes the scenario's head_meter.emulation
            if meter_emulation is None:
                meter_emulation = getattr(getattr(twin.scenario, "head_meter", None), "emulation", None)
            dev = EmulatedDevice("meter/head", "meter", "meter", 1, twin, rating_kva=head_rating_kva(twin.net),
                                 emulation=meter_emulation)
            self._add_port([dev], "meter", bus=int(twin.net.ext_grid.bus.iloc[0]))
        # energy accumulators (Wh while p > 0, Wh while p < 0), integrated after each twin step
        self._acc: dict[str, tuple] = {}
        self._pf_devices: set[EmulatedDevice] = set()
        self._responding: set[EmulatedDevice] = set()  # setpoints still moving toward a target
        self.v_bus = BusVoltage()  # bus voltages between power flows, as devices measure them
        self._der_pf = (0.0, 0.0)  # sum of DER P/Q at the last power flow (the meter follows DER)
        for d in self.devices.values():
            key = d.fleet.name if d.fleet is not None else d.device_id
            if key not in self._acc:
                self._acc[key] = lifetime_energy_wh(d, int(twin.scenario.seed or 0))
            d.acc = self._acc[key]
            d.pf_devices = self._pf_devices
            d.responding = self._responding
            d.v_bus = self.v_bus
            if d.fleet is None:
                d.head_delta = self.der_since_pf
        self._hooked = False

    def _der_sum(self) -> tuple[float, float]:
        fl = self.twin.fleets.values()
        return sum(float(f.p_kw.sum()) for f in fl), sum(float(f.q_kvar.sum()) for f in fl)

    def der_since_pf(self) -> tuple[float, float]:
        """Change of all DER P/Q (load convention) since the last power flow: the head meter
        sees it at once (the feeder passes a DER's change to the head, losses aside)."""
        if self.v_bus.t_cur < 0:
            return 0.0, 0.0
        p, q = self._der_sum()
        return p - self._der_pf[0], q - self._der_pf[1]

    def _after_step(self, twin) -> None:
        """Runs inside the twin step (lock held): energy registers, constant-PF control, the
        setpoint response of devices and the bus voltages devices measure between power flows."""
        g = twin.grid
        if g.result is not None and g.t_s != self.v_bus.t_cur:  # a power flow just ran
            self.v_bus.record(g.t_s, g.v_meas_pu)
            self._der_pf = self._der_sum()
        dt_h = twin.dt_s / 3600.0
        for key, (pos, neg) in self._acc.items():
            if key in twin.fleets:
                p = twin.fleets[key].p_kw
            else:
                r = twin.grid.result
                if r is None or not r.converged:
                    continue
                p = np.array([r.p_head_kw])
            pos += np.maximum(p, 0.0) * (1000.0 * dt_h)
            neg += np.maximum(-p, 0.0) * (1000.0 * dt_h)
        for d in list(self._pf_devices):
            f, i = d.fleet, d.index
            q_gen = pf_to_q_gen_kvar(-float(f.p_kw[i]), d.pf_target)
            q_lo, q_hi = float(f.q_min_kvar[i]), float(f.q_max_kvar[i])  # load convention
            d.command("q_set_kvar", min(max(-q_gen, q_lo), q_hi))
        for d in list(self._responding):
            d.respond(twin.dt_s)
        if self.rtu is not None and twin.step_index % twin.pf_every == 0:
            self.rtu.publish()  # a power flow just ran: the RTU reports it, whoever steps the twin

    def _port(self) -> int:
        if self._next_port is None:
            sock = reserve_port(self.host)
            self._held.append(sock)  # held so no two devices get the same port
            return sock.getsockname()[1]
        p = self._next_port
        self._next_port += 1
        return p

    def _add_group(self, name, fleet, gateway: bool) -> None:
        map_name = MAP_FOR_KIND[fleet.KIND]
        emu = getattr(self._groups.get(name), "emulation", None)
        devs = [EmulatedDevice(f"{name}/{i}", fleet.KIND, map_name, (i % GATEWAY_UNITS) + 1 if gateway else 1,
                               self.twin, fleet, i, emulation=emu) for i in range(fleet.n)]
        if gateway:
            for k in range(0, len(devs), GATEWAY_UNITS):
                self._add_port(devs[k:k + GATEWAY_UNITS], name)
        else:
            for d in devs:
                self._add_port([d], name)

    def _add_port(self, devs, group, bus=None) -> None:
        port = self._port()
        emu = devs[0].emulation
        self._modbus.append(ModbusEndpoint(self.host, port, devs, self.lock, self.idle_timeout_s,
                                           max_connections=getattr(emu, "max_connections", 0),
                                           min_request_interval_s=getattr(emu, "min_request_interval_s", 0.0)))
        for d in devs:
            self.devices[d.device_id] = d
            b = bus if d.fleet is None else int(d.fleet.bus[d.index])
            self.endpoints.append(Endpoint(d.device_id, group, d.kind, "modbus", self.host, port,
                                           d.unit, d.map_name, b))

    # --- lifecycle ---------------------------------------------------------------------------
    def _run(self, coro, timeout_s=None):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s or self._timeout)

    def start(self) -> list[dict]:
        """Bind every server; returns the endpoint table as dicts."""
        t0 = time.perf_counter()
        self._thread.start()
        if not self._hooked:
            self.twin.after_step.append(self._after_step)
            self._hooked = True

        async def start_all():
            await asyncio.gather(*(ep.start() for ep in self._modbus))

        for sock in self._held:
            sock.close()
        self._held.clear()
        self._run(start_all())
        if self._want_rtu:
            from device_emulators.rtu import FeederRtu

            port = self._port()
            for sock in self._held:
                sock.close()
            self._held.clear()
            self.rtu = FeederRtu(self.twin, self.lock, host=self.host, port=port, ssl_context=self._rtu_ssl)
            self.rtu.start()
            self.endpoints.append(Endpoint("rtu", "rtu", "rtu", "iec104", self.host, self.rtu.port,
                                           self.rtu.common_address, "feeder_rtu"))
        self.start_s = time.perf_counter() - t0
        from device_emulators.faults import schedule_faults

        schedule_faults(self)
        return [e.as_dict() for e in self.endpoints]

    def start_control(self, port: int, events_path=None) -> int:
        """Open the run-time fault control port on this host's loopback address; returns it."""
        from device_emulators.control import ControlServer

        self.control = ControlServer(self, events_path)
        return self._run(self.control.start(self.host, port))

    def stop(self) -> None:
        if self.control is not None:
            self._run(self.control.stop(), 10)
            self.control = None
        if self._hooked:
            with self.lock:
                self.twin.after_step.remove(self._after_step)
            self._hooked = False
        if self.rtu is not None:
            self.rtu.stop()
        if self._thread.is_alive():
            async def stop_all():
                await asyncio.gather(*(ep.stop() for ep in self._modbus), return_exceptions=True)

            try:
                self._run(stop_all(), 30)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(timeout=10)

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def endpoint_of(self, device_id: str) -> ModbusEndpoint:
        for ep in self._modbus:
            if any(d.device_id == device_id for d in ep.devices):
                return ep
        raise KeyError(device_id)

    def run_on_loop(self, coro, timeout_s: float = 30.0):
        return self._run(coro, timeout_s)

    def step(self, t_s: float) -> None:
        """Advance the twin to t_s while holding the lock (what lockstep/real-time loops call)."""
        with self.lock:
            self.twin.run_until(t_s)
        if self.rtu is not None:
            self.rtu.publish()
