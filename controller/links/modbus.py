"""ModbusLink: SunSpec devices over Modbus TCP (pymodbus sync client).

Per device: SunSpec discovery ('SunS' at 40000, then the model chain to 0xFFFF), one block
read per model the device's profile needs, scale factors applied, not-implemented points
flagged INVALID. Writes are confirmed by reading the registers back. Each device has its
own poll period; failures are retried on an exponential backoff, and after `max_failures`
in a row the device is marked unavailable (DeviceStatus) so the cycle dispatches without it;
it is probed on the backoff schedule and comes back on its first good answer.

Devices are polled concurrently (a bounded thread pool, one task per TCP endpoint so a
gateway's units share one connection in turn) and `read()` waits at most `deadline_s`: a
device still answering then is reported late (its values STALE) for that cycle and never
holds up the others. Discovery (models, ratings) runs on a device's first answer and again
after every lost connection; `take_rediscovered()` hands the new ratings to the controller.
A refused connection is logged as "connection refused", not as a missing SunSpec marker.

Devices without a SunSpec model (EV chargers, TCL gateways, flexible loads) use a plain
register map (`controller.links.regmaps`): one block read per poll, writes read back.
"""

from __future__ import annotations

import logging
import math
import select
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field

from pymodbus.client import ModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException

from controller.links import regmaps
from controller.links import sunspec as ss
from controller.links.base import DeviceInfo, DeviceLink, DeviceStatus, Quality, Value

log = logging.getLogger("controller.links.modbus")

# quantity -> candidates (model, point, factor); factor turns scaled SunSpec units into ours
# (SunSpec inverters report W > 0 when exporting; we use load convention: generation < 0)
# energy counters (e_*_kwh) feed the data-quality checks (controller/quality.py: a counter that
# stands still while P says it must move is a frozen device)
READS = {
    "pv": {"p_kw": [(103, "W", -1e-3), (701, "W", -1e-3)],
           "q_kvar": [(103, "VAr", -1e-3), (701, "VAr", -1e-3)],
           "p_limit_pct": [(123, "WMaxLimPct", 1.0)],
           "e_exp_kwh": [(103, "WH", 1e-3)]},
    "battery": {"p_kw": [(103, "W", -1e-3), (701, "W", -1e-3)],
                "soc_pct": [(124, "ChaState", 1.0), (713, "SoC", 1.0)],
                # model 701 is 155 registers: read in two requests (MAX_READ each)
                "e_imp_kwh": [(701, "TotWhAbs", 1e-3)], "e_exp_kwh": [(701, "TotWhInj", 1e-3)]},
    "meter": {"p_kw": [(203, "W", 1e-3)], "q_kvar": [(203, "VAR", 1e-3)],
              "v_v": [(203, "PhV", 1.0)],
              "e_imp_kwh": [(203, "TotWhImp", 1e-3)], "e_exp_kwh": [(203, "TotWhExp", 1e-3)]},
}
MAX_READ = 125  # registers one Modbus read may ask for (the protocol's limit)
# setpoint -> SunSpec points that carry it, per kind (the first model the device implements wins;
# 704 before 123 for reactive power, 124 before 704 for battery power); see _write_setpoint
WRITES = {
    "pv": {"p_limit_pct": ((123, ("WMaxLimPct", "WMaxLim_Ena")), (704, ("WMaxLimPct", "WMaxLimPctEna"))),
           "q_set_kvar": ((704, ("VarSet", "VarSetMod", "VarSetEna")),
                          (123, ("VArWMaxPct", "VArPct_Mod", "VArPct_Ena")))},
    "battery": {"p_set_kw": ((124, ("InWRte", "OutWRte", "StorCtl_Mod")), (704, ("WSet", "WSetMod", "WSetEna"))),
                "q_set_kvar": ((704, ("VarSet", "VarSetMod", "VarSetEna")),)},
}
RATINGS = {
    "pv": {"s_rated_kva": [(120, "VARtg", 1e-3), (120, "WRtg", 1e-3)]},
    "battery": {"p_max_kw": [(124, "WChaMax", 1e-3)], "e_cap_kwh": [(713, "WHRtg", 1e-3)],
                "soc_min_pct": [(124, "MinRsvPct", 1.0)]},
}


class _Client(ModbusTcpClient):
    """pymodbus's sync TCP client waits for answers with select.select, which fails for file
    descriptors >= 1024 (past ~1,000 devices, one connection each); this one waits with poll()."""

    def recv(self, size: int | None) -> bytes:
        if not self.socket:
            raise ConnectionException(str(self))
        self.socket.setblocking(False)
        poller = select.poll()
        poller.register(self.socket, select.POLLIN)
        want = size if size else 4096
        data: list[bytes] = []
        got = 0
        start = time.time()
        end = start + (self.comm_params.timeout_connect or 0)
        while want > 0:
            if poller.poll(max(0.0, end - time.time()) * 1000.0):
                chunk = self.socket.recv(want)
                if chunk == b"":
                    return self._handle_abrupt_socket_close(size, data, time.time() - start)
                data.append(chunk)
                got += len(chunk)
            if not size or time.time() > end:
                break
            want = size - got
        return b"".join(data)


class ModbusLinkError(ValueError):
    """Bad endpoint configuration (one line, names the device and field)."""


class _ExceptionResponse(IOError):
    """The device answered with a Modbus exception (it is there, the register is not)."""


@dataclass
class _Dev:
    info: DeviceInfo
    host: str
    port: int
    unit: int
    poll_s: float
    models: dict[int, int] = field(default_factory=dict)  # model id -> address of its ID register
    values: dict[str, Value] = field(default_factory=dict)
    status: DeviceStatus = field(default_factory=DeviceStatus)
    next_poll_t: float = -math.inf
    sf_cache: dict = field(default_factory=dict)
    regmap: regmaps.RegisterMap | None = None  # plain map (no SunSpec)
    late: bool = False  # its poll overran the read deadline (values reported STALE this cycle)
    writes: dict[str, int] = field(default_factory=dict)  # setpoint -> SunSpec model that takes it


class ModbusLink(DeviceLink):
    """rows: [{device_id, group, kind, host, port, unit, poll_s?, bus?}]"""

    def __init__(self, rows: list[dict], clock, timeout_s: float = 0.5, poll_s: float = 1.0,
                 max_failures: int = 2, backoff_s: float = 1.0, backoff_max_s: float = 30.0,
                 stale_factor: float = 3.0, workers: int = 32, deadline_s: float | None = None):
        """workers: concurrent endpoint polls (1: one device after another, in the caller's
        thread); deadline_s: longest `read()` waits for polls (default 2 x timeout_s + 0.1)."""
        self.clock = clock
        self.workers = max(1, int(workers))
        self.deadline_s = 2 * timeout_s + 0.1 if deadline_s is None else float(deadline_s)
        self._pool = None  # started on the first concurrent poll
        self._inflight: dict[tuple[str, int], object] = {}
        self._rediscovered: dict[str, dict[str, float]] = {}
        self._mu = threading.Lock()  # clients dict, counters, rediscovered
        self.timeout_s, self.max_failures = timeout_s, max_failures
        self.backoff_s, self.backoff_max_s, self.stale_factor = backoff_s, backoff_max_s, stale_factor
        self._clients: dict[tuple[str, int], ModbusTcpClient] = {}
        self._locks: dict[tuple[str, int], threading.Lock] = {}
        self._devs: dict[str, _Dev] = {}
        for r in rows:
            for k in ("device_id", "kind", "host", "port"):
                if k not in r:
                    raise ModbusLinkError(f"modbus endpoint {r.get('device_id', '?')}: missing {k!r}")
            try:
                rmap = regmaps.resolve(r) if r["kind"] not in READS or r.get("map_file") else None
            except regmaps.RegisterMapError as e:
                raise ModbusLinkError(f"modbus endpoint {r['device_id']}: {e}") from None
            if r["kind"] not in READS and rmap is None:
                raise ModbusLinkError(f"modbus endpoint {r['device_id']}: kind {r['kind']!r} has no "
                                      f"SunSpec profile or register map; known: "
                                      f"{sorted(READS) + sorted(regmaps.MAP_FOR_KIND)}")
            group = r.get("group") or r["device_id"].rpartition("/")[0]
            info = DeviceInfo(r["device_id"], group, r["kind"], r.get("bus"))
            self._devs[r["device_id"]] = _Dev(info, r["host"], int(r["port"]), int(r.get("unit", 1)),
                                              float(r.get("poll_s", poll_s)), regmap=rmap)
        self.reads = self.writes = self.failures = self.late = 0

    @classmethod
    def from_endpoints(cls, rows: list[dict], clock, **kw) -> ModbusLink:
        return cls(rows, clock, **kw)

    # --- transport --------------------------------------------------------------------------------
    def _client(self, d: _Dev) -> tuple[ModbusTcpClient, threading.Lock]:
        key = (d.host, d.port)
        with self._mu:
            c = self._clients.get(key)
            if c is None:
                c = _Client(d.host, port=d.port, timeout=self.timeout_s, retries=0,
                                    reconnect_delay=0.0)
                self._clients[key] = c
                self._locks[key] = threading.Lock()
            return c, self._locks[key]

    def _connect(self, d: _Dev, c: ModbusTcpClient) -> None:
        """Connect (caller holds the endpoint lock); a failure says why, in words."""
        if c.connected:
            return
        if c.connect():
            return
        try:  # pymodbus only says False: ask the socket layer what happened
            socket.create_connection((d.host, d.port), timeout=min(self.timeout_s, 0.2)).close()
            why = "connection failed"
        except ConnectionRefusedError:
            why = "connection refused"
        except TimeoutError:
            why = "connect timed out"
        except OSError as e:
            why = (e.strerror or str(e)).lower()
        raise ConnectionError(f"{d.host}:{d.port}: {why}")

    def _read(self, d: _Dev, address: int, count: int) -> list[int]:
        c, lock = self._client(d)
        with lock:
            self._connect(d, c)
            rr = c.read_holding_registers(address, count=count, device_id=d.unit)
        self.reads += 1
        if rr.isError():
            raise _ExceptionResponse(f"exception response {getattr(rr, 'exception_code', '?')}")
        return list(rr.registers)

    def _write_regs(self, d: _Dev, address: int, regs: list[int]) -> None:
        c, lock = self._client(d)
        with lock:
            self._connect(d, c)
            rr = c.write_registers(address, regs, device_id=d.unit)
        self.writes += 1
        if rr.isError():
            raise _ExceptionResponse(f"exception response {getattr(rr, 'exception_code', '?')}")

    # --- discovery ---------------------------------------------------------------------------------
    def _discover(self, d: _Dev) -> None:
        """Models and ratings of a device that answers (first time, or after a reconnect)."""
        self._discover_now(d)
        with self._mu:
            self._rediscovered[d.info.device_id] = dict(d.info.ratings)
        log.info("%s discovered (%s:%d unit %d): %s", d.info.device_id, d.host, d.port, d.unit,
                 ", ".join(f"{k}={v:g}" for k, v in sorted(d.info.ratings.items())) or "no ratings")

    def _discover_now(self, d: _Dev) -> None:
        if d.regmap is not None:
            lo, _ = d.regmap.span
            regs = self._plain_block(d)
            d.models = {0: lo}  # marks the device as discovered
            d.info.ratings = {r.name: d.regmap.decode(regs, r) for r in d.regmap.registers if r.rating}
            d.writes = {r.write: 0 for r in d.regmap.registers if r.write}
            return
        for base in ss.BASE_ADDRESSES:
            try:
                if tuple(self._read(d, base, 2)) == ss.SUNS:
                    break
            except _ExceptionResponse:  # answered, but nothing there: try the next base
                continue
        else:
            raise OSError("no SunSpec marker 'SunS' at 40000/0/50000")
        addr, models = base + 2, {}
        for _ in range(64):  # bounded walk of the model chain
            mid, length = self._read(d, addr, 2)
            if mid == ss.END_ID:
                break
            models[mid] = addr
            addr += 2 + length
        d.models = models
        d.info.ratings = self._ratings(d)
        d.writes = self._writable_points(d)

    def _writable_points(self, d: _Dev) -> dict[str, int]:
        """{setpoint: model} for the setpoints whose SunSpec points the device implements
        (a point marked "not implemented" in its block does not count)."""
        out, blocks = {}, {}
        for sp, cands in WRITES.get(d.info.kind, {}).items():
            for mid, points in cands:
                if mid not in d.models:
                    continue
                regs = blocks.get(mid) or blocks.setdefault(mid, self._block(d, mid))
                lay = ss.layout(mid)
                if all(ss.decode(regs, lay[n]) is not None for n in points):
                    out[sp] = mid
                    break
        if "p_set_kw" in out and out["p_set_kw"] == 124 and not d.info.ratings.get("p_max_kw"):
            del out["p_set_kw"]  # a rate in % of WChaMax needs WChaMax
        return out
    def take_rediscovered(self) -> dict[str, dict[str, float]]:
        """{device_id: ratings} of devices (re)discovered since the last call."""
        with self._mu:
            out, self._rediscovered = self._rediscovered, {}
        return out

    def _plain_block(self, d: _Dev) -> list[int]:
        lo, n = d.regmap.span
        return self._read(d, lo, n)

    def _block(self, d: _Dev, mid: int) -> list[int]:
        """The model's fixed block, in requests of at most MAX_READ registers (701 is 155)."""
        lay = ss.layout(mid)
        n = max(p.offset + p.size for p in lay.values())
        out: list[int] = []
        while len(out) < n:
            out += self._read(d, d.models[mid] + len(out), min(MAX_READ, n - len(out)))
        return out

    @staticmethod
    def _scaled(regs, mid: int, point: str, factor: float, blocks_sf=None) -> tuple[float, Quality]:
        lay = ss.layout(mid)
        p = lay[point]
        raw = ss.decode(regs, p)
        if raw is None:
            return math.nan, Quality.INVALID
        sf = 0
        if isinstance(p.sf, str):
            sf = ss.decode(regs, lay[p.sf]) if p.sf in lay else None
        elif isinstance(p.sf, int):
            sf = p.sf
        if sf is None or not -10 <= sf <= 10:
            return math.nan, Quality.INVALID
        return raw * 10.0 ** sf * factor, Quality.GOOD

    def _ratings(self, d: _Dev) -> dict[str, float]:
        out, blocks = {}, {}
        for name, cands in RATINGS.get(d.info.kind, {}).items():
            for mid, point, f in cands:
                if mid not in d.models:
                    continue
                regs = blocks.get(mid) or blocks.setdefault(mid, self._block(d, mid))
                v, q = self._scaled(regs, mid, point, f)
                if q == Quality.GOOD:
                    out[name] = v
                    break
        if "soc_min_pct" in out and "e_cap_kwh" in out:
            out["soc_min_kwh"] = out.pop("soc_min_pct") / 100.0 * out["e_cap_kwh"]
        return out

    # --- polling -----------------------------------------------------------------------------------
    def _poll(self, d: _Dev, t: float) -> None:
        if not d.models:
            self._discover(d)
        if d.regmap is not None:
            regs = self._plain_block(d)
            d.values = {r.name: Value(d.regmap.decode(regs, r), Quality.GOOD, t)
                        for r in d.regmap.registers}
            return
        blocks, vals = {}, {}
        for name, cands in READS[d.info.kind].items():
            for mid, point, f in cands:
                if mid not in d.models:
                    continue
                regs = blocks.get(mid) or blocks.setdefault(mid, self._block(d, mid))
                v, q = self._scaled(regs, mid, point, f)
                vals[name] = Value(v, q, t)
                break
        if "soc_pct" in vals and "e_cap_kwh" in d.info.ratings:
            s = vals["soc_pct"]
            vals["soc_kwh"] = Value(s.value / 100.0 * d.info.ratings["e_cap_kwh"], s.quality, t)
        d.values = vals

    def _fail(self, d: _Dev, t: float, why: str) -> None:
        c = self._clients.get((d.host, d.port))
        if c is not None:  # a late answer must not be taken for the next request's
            with self._locks[(d.host, d.port)]:
                c.close()
        for o in self._devs.values():  # the connection is closed: every device behind it is
            if (o.host, o.port) == (d.host, d.port):  # rediscovered on its next answer
                o.models = {}
        st = d.status
        st.consecutive_failures += 1
        with self._mu:
            self.failures += 1
        if st.consecutive_failures >= self.max_failures and st.available:
            st.available, st.reason = False, why
            log.warning("%s unavailable: %s", d.info.device_id, why)
        k = max(st.consecutive_failures - self.max_failures, 0)
        d.next_poll_t = t + (min(self.backoff_s * 2 ** k, self.backoff_max_s) if not st.available
                             else d.poll_s)

    def _poll_one(self, d: _Dev, t: float) -> None:
        try:
            self._poll(d, t)
        except (ModbusException, OSError, ValueError, KeyError) as e:
            self._fail(d, t, f"{type(e).__name__}: {e}"[:120])
        else:
            if not d.status.available:
                log.info("%s answers again", d.info.device_id)
            d.status = DeviceStatus(True, "", t, 0)
            d.next_poll_t = t + d.poll_s
        finally:
            d.late = False

    def _poll_endpoint(self, devs: list[_Dev], t: float) -> None:
        for d in devs:
            self._poll_one(d, t)

    def poll_due(self) -> None:
        """Poll every device that is due; concurrently per endpoint, waiting at most
        `deadline_s` (a device still busy then is `late` this cycle and finishes in the
        background; it is not polled again until it has)."""
        t = self.clock.now()
        due = [d for d in self._devs.values() if t >= d.next_poll_t]
        if self.workers == 1:
            for d in due:
                self._poll_one(d, t)
            return
        self._run_per_endpoint(due, self._poll_endpoint, t)

    def _run_per_endpoint(self, devs: list[_Dev], task, *args) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="modbus-poll")
        by_ep: dict[tuple[str, int], list[_Dev]] = {}
        for d in devs:
            by_ep.setdefault((d.host, d.port), []).append(d)
        started = []
        for ep, group in by_ep.items():
            busy = self._inflight.get(ep)
            if busy is not None and not busy.done():
                for d in group:
                    d.late = True
                continue
            f = self._pool.submit(task, group, *args)
            self._inflight[ep] = f
            started.append((f, group))
        wait_futures([f for f, _ in started], timeout=self.deadline_s)
        for f, group in started:
            if not f.done():
                for d in group:
                    d.late = True
        n_late = sum(d.late for d in devs)
        if n_late:
            with self._mu:
                self.late += n_late

    # --- DeviceLink -------------------------------------------------------------------------------
    def devices(self) -> list[DeviceInfo]:
        """Device list; ratings are filled once a device has been discovered (here for those
        that answer now, later on their first answer)."""
        todo = [d for d in self._devs.values() if not d.models]

        def discover(group):
            for d in group:
                try:
                    self._discover(d)
                except (ModbusException, OSError, ValueError, KeyError) as e:
                    log.warning("%s: discovery failed: %s", d.info.device_id, e)

        if self.workers == 1:
            discover(todo)
        else:
            self._run_per_endpoint(todo, discover)
            for d in todo:
                d.late = False
        self._rediscovered.clear()  # the controller takes these ratings from the list itself
        return [d.info for d in self._devs.values()]

    def read(self) -> dict[str, dict[str, Value]]:
        self.poll_due()
        t = self.clock.now()
        out = {}
        for dev, d in self._devs.items():
            if not d.status.available:
                out[dev] = {k: Value(v.value, Quality.MISSING, v.t) for k, v in d.values.items()}
                continue
            if d.late:  # still answering its poll: last values, not trusted this cycle
                out[dev] = {k: Value(v.value, Quality.STALE if v.quality == Quality.GOOD else v.quality, v.t)
                            for k, v in d.values.items()}
                continue
            stale_after = self.stale_factor * d.poll_s
            out[dev] = {k: (Value(v.value, Quality.STALE, v.t)
                            if v.quality == Quality.GOOD and t - v.t > stale_after else v)
                        for k, v in d.values.items()}
        return out

    def status(self) -> dict[str, DeviceStatus]:
        return {dev: d.status for dev, d in self._devs.items()}

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        d = self._devs.get(device_id)
        if d is None:
            raise KeyError(f"unknown device {device_id!r}")
        if not d.status.available:
            return False
        try:
            if not d.models:
                self._discover(d)
            return self._write_setpoint(d, setpoint, float(value))
        except (ModbusException, OSError) as e:
            log.info("write %s.%s=%g failed: %s", device_id, setpoint, value, e)
            return False

    def _write_points(self, d: _Dev, mid: int, values: dict[str, float]) -> bool:
        """Write scaled points of one model, then read the block back and compare."""
        if mid not in d.models:
            raise OSError(f"device has no SunSpec model {mid}")
        lay = ss.layout(mid)
        regs = self._block(d, mid)
        raws = {}
        for name, v in values.items():
            p = lay[name]
            sf = ss.decode(regs, lay[p.sf]) if isinstance(p.sf, str) else 0
            if sf is None:
                raise OSError(f"model {mid} {p.sf} not implemented")
            raws[name] = int(round(v / 10.0 ** sf))
        for name, raw in raws.items():
            p = lay[name]
            self._write_regs(d, d.models[mid] + p.offset, ss.encode(raw, p))
        back = self._block(d, mid)
        return all(ss.decode(back, lay[n]) == r for n, r in raws.items())

    def _write_plain(self, d: _Dev, setpoint: str, value: float) -> bool:
        m = d.regmap
        reg = m.for_setpoint(setpoint)
        if reg is None:
            raise OSError(f"{d.info.device_id}: map {m.name} has no register for {setpoint!r}")
        try:
            raw = m.encode(reg, value)
        except ValueError as e:
            raise OSError(str(e)) from None
        self._write_regs(d, reg.address, [raw])
        back = self._plain_block(d)
        return back[reg.address - m.span[0]] == raw

    def _write_setpoint(self, d: _Dev, setpoint: str, value: float) -> bool:
        if d.regmap is not None:
            return self._write_plain(d, setpoint, value)
        kind = d.info.kind
        mid = d.writes.get(setpoint)
        if mid is None:
            raise OSError(f"{d.info.device_id}: setpoint {setpoint!r} not supported by the device "
                          f"(kind {kind!r}, models {sorted(d.models)})")
        if setpoint == "p_limit_pct":
            if mid == 123:
                return self._write_points(d, 123, {"WMaxLimPct": value, "WMaxLim_Ena": 1})
            return self._write_points(d, 704, {"WMaxLimPct": value, "WMaxLimPctEna": 1})
        if setpoint == "q_set_kvar":  # load convention (> 0 absorbing); SunSpec VAr > 0 injecting
            if mid == 704:
                return self._write_points(d, 704, {"VarSetMod": 4, "VarSet": -value * 1e3, "VarSetEna": 1})
            s_kva = d.info.ratings.get("s_rated_kva")
            if not s_kva:
                raise OSError("WRtg unknown: cannot express q_set_kvar in % of WMax")
            return self._write_points(d, 123, {"VArPct_Mod": 1, "VArWMaxPct": -value / s_kva * 100.0,
                                               "VArPct_Ena": 1})
        if setpoint == "p_set_kw" and mid == 704:  # W > 0 discharging
            return self._write_points(d, 704, {"WSetMod": 1, "WSet": -value * 1e3, "WSetEna": 1})
        if setpoint == "p_set_kw":
            p_max = d.info.ratings["p_max_kw"]
            pct = min(abs(value) / p_max * 100.0, 100.0)
            mode = 1 if value > 0 else 2 if value < 0 else 0
            if "p_set_kw" in self._held_704(d):  # a 704 WSet left enabled overrides 124
                self._write_points(d, 704, {"WSetEna": 0})
            return self._write_points(d, 124, {"InWRte": pct if mode == 1 else 0.0,
                                               "OutWRte": pct if mode == 2 else 0.0,
                                               "StorCtl_Mod": mode})
        raise OSError(f"{d.info.device_id}: setpoint {setpoint!r} not supported for kind {kind!r}")

    # --- read-back of held setpoints (controller/reconcile.py) --------------------------------------
    def _held_704(self, d: _Dev) -> dict[str, float]:
        """Setpoints an enabled 704 control holds (WSet, WMaxLimPct, VarSet), if the device has 704."""
        if 704 not in d.models:
            return {}
        regs, lay, out = self._block(d, 704), ss.layout(704), {}

        def on(name):
            return ss.decode(regs, lay[name]) == 1

        def val(name):
            v, q = self._scaled(regs, 704, name, 1.0)
            return v if q == Quality.GOOD else None

        if d.info.kind == "battery" and on("WSetEna") and ss.decode(regs, lay["WSetMod"]) == 1:
            w = val("WSet")
            if w is not None:
                out["p_set_kw"] = -w * 1e-3
        if d.info.kind == "pv" and on("WMaxLimPctEna") and val("WMaxLimPct") is not None:
            out["p_limit_pct"] = val("WMaxLimPct")
        if on("VarSetEna") and ss.decode(regs, lay["VarSetMod"]) == 4 and val("VarSet") is not None:
            out["q_set_kvar"] = -val("VarSet") * 1e-3
        return out

    def _held(self, d: _Dev) -> dict[str, float]:
        """What the device holds now, as the controller's setpoints (read from the device)."""
        if d.regmap is not None:
            regs = self._plain_block(d)
            return {r.write: d.regmap.decode(regs, r) for r in d.regmap.registers if r.write}
        out = {}
        kind = d.info.kind
        if kind == "battery" and 124 in d.models and d.info.ratings.get("p_max_kw"):
            regs, lay = self._block(d, 124), ss.layout(124)
            mode = ss.decode(regs, lay["StorCtl_Mod"]) or 0
            rate = {"InWRte": 0.0, "OutWRte": 0.0}
            for n in rate:
                v, q = self._scaled(regs, 124, n, 1.0)
                rate[n] = v if q == Quality.GOOD else 0.0
            p_max = d.info.ratings["p_max_kw"]
            out["p_set_kw"] = (p_max * rate["InWRte"] / 100.0 if mode == 1 else
                               -p_max * rate["OutWRte"] / 100.0 if mode == 2 else 0.0)
        if kind == "pv" and 123 in d.models:
            regs, lay = self._block(d, 123), ss.layout(123)
            v, q = self._scaled(regs, 123, "WMaxLimPct", 1.0)
            if ss.decode(regs, lay["WMaxLim_Ena"]) == 1 and q == Quality.GOOD:
                out["p_limit_pct"] = v
            elif ss.decode(regs, lay["WMaxLim_Ena"]) is not None:
                out["p_limit_pct"] = 100.0
        held = self._held_704(d)  # an enabled 704 control wins (PV: the lower limit holds)
        if "p_limit_pct" in held:
            held["p_limit_pct"] = min(held["p_limit_pct"], out.get("p_limit_pct", 100.0))
        out.update(held)
        return out

    def read_setpoints(self, device_ids=None) -> dict[str, dict[str, float]]:
        """{device_id: {setpoint: value}} read back from every device (or those named) that
        answers now (per endpoint concurrently, within the read deadline; a device that fails
        is left out)."""
        out: dict[str, dict[str, float]] = {}

        def task(group):
            for d in group:
                if not d.status.available:
                    continue
                try:
                    if not d.models:
                        self._discover(d)
                    out[d.info.device_id] = self._held(d)
                except (ModbusException, OSError, ValueError, KeyError) as e:
                    log.info("%s: setpoints not read back: %s", d.info.device_id, e)

        devs = [d for d in self._devs.values() if device_ids is None or d.info.device_id in device_ids]
        if self.workers == 1:
            task(devs)
        else:
            self._run_per_endpoint(devs, task)
            for d in devs:
                d.late = False
        return out

    def writable(self, device_id: str) -> frozenset[str] | None:
        d = self._devs.get(device_id)
        if d is None or not d.models:
            return None
        return frozenset(d.writes)

    def devices_known(self) -> list[DeviceInfo]:
        return [d.info for d in self._devs.values()]

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        for c in self._clients.values():
            c.close()
