"""Iec104Link: the controller's IEC 60870-5-104 link to feeder RTUs (controller.links.iec104_client).

The RTU appears as one device per endpoint (device id = the endpoint's device_id, kind
'rtu'). Monitoring points are learnt from the general interrogation and kept current by
spontaneous and cyclic transmissions; each becomes a quantity named by its address range
(the standard layout, see device_emulators/README.md: v_pu.<k>, line_loading_pct.<k>,
trafo_loading_pct.<k>, tap_pos.<k>, cap_step.<k>, head_p_kw, head_q_kvar, switch_closed.<k>).

Quality: IV bit -> invalid; NT/SB/BL/OV, or no message for the point within `stale_s` -> stale;
link down -> missing and the device unavailable. Staleness is measured on the wall clock,
the time base the RTU reports in (deadband changes plus a cyclic refresh): in a lockstep run
simulated minutes pass in wall milliseconds and must not make quiet points look stale. The link
reconnects by itself, with exponential backoff between attempts (wall clock).

Commands wait for the RTU's confirmation, never longer than `command_timeout_ms` per step:
`write("rtu/trafo<k>", "tap_pos", v)` sends C_SE_NC_1, `write("rtu/cap<k>", "step", n)` a
capacitor step (C_SE_NC_1), `write("rtu/switch<k>", "closed", 0|1)` C_SC_NA_1. Switches are
select-before-operate unless the endpoint row says `sbo: false`, setpoints only where it says
`sbo_setpoints: true`; a select-before-operate command also waits for its activation termination
(`termination: "sbo"`, or "always" / "never"). With `tls` in the row ({cert_file, key_file,
ca_file, check_hostname?, server_name?}) the link speaks IEC 104 over mutually authenticated TLS.
"""

import asyncio
import ipaddress
import logging
import math
import socket
import threading
import time

from controller.links.base import DeviceInfo, DeviceLink, DeviceStatus, Quality, Value
from controller.links.iec104_client import (
    BL,
    C_SC_NA_1,
    C_SE_NC_1,
    IV,
    NT,
    OV,
    SB,
    Iec104Client,
    float_setpoint,
    single_command,
)

log = logging.getLogger("controller.iec104")

RANGES = [(1000, 2000, "v_pu"), (2000, 3000, "line_loading_pct"), (3000, 3500, "trafo_loading_pct"),
          (3500, 3600, "tap_pos"), (3600, 4000, "cap_step"), (5000, 6000, "switch_closed")]
HEAD = {4000: "head_p_kw", 4001: "head_q_kvar"}
SWITCH_CMD, TAP_CMD, CAP_CMD = 6000, 7000, 7500
TERMINATION = ("sbo", "always", "never")


def quantity_name(ioa: int) -> str | None:
    if ioa in HEAD:
        return HEAD[ioa]
    for lo, hi, name in RANGES:
        if lo <= ioa < hi:
            return f"{name}.{ioa - lo}"
    return None


class Iec104LinkError(ValueError):
    """Bad endpoint configuration; one line."""


class _Rtu:
    def __init__(self, row: dict, client: Iec104Client):
        self.info = DeviceInfo(row["device_id"], row.get("group", "rtu"), "rtu", row.get("bus"))
        self.ca = client.ca
        self.sbo = bool(row.get("sbo", True))
        self.sbo_setpoints = bool(row.get("sbo_setpoints", False))
        self.termination = row.get("termination", "sbo")
        self.client = client
        self.seen_seq: dict[int, int] = {}  # ioa -> message count at the last read
        self.updated: dict[int, float] = {}  # ioa -> controller time the latest message was first seen
        self.status = DeviceStatus(available=False, reason="not connected yet")

    @property
    def backoff_s(self) -> float:
        return self.client.backoff_s


def _tls_context(row: dict):
    tls = row.get("tls")
    if not tls:
        try:
            loopback = ipaddress.ip_address(socket.gethostbyname(row["host"])).is_loopback
        except (OSError, ValueError):  # unresolvable now: the link retries; say it is plain
            loopback = False
        if not loopback:
            log.warning("IEC 104 %s: plain TCP to %s (no tls: commands and telemetry travel unauthenticated)",
                        row["device_id"], row["host"])
        return None, None
    from controller.security.tls import client_context

    missing = [k for k in ("cert_file", "key_file", "ca_file") if not tls.get(k)]
    if missing:
        raise Iec104LinkError(f"iec104 endpoint {row['device_id']}: tls needs {', '.join(missing)}")
    try:
        ctx = client_context(tls["cert_file"], tls["key_file"], tls["ca_file"],
                             check_hostname=bool(tls.get("check_hostname", True)))
    except ValueError as e:
        raise Iec104LinkError(f"iec104 endpoint {row['device_id']}: {e}") from None
    return ctx, tls.get("server_name")


class Iec104Link(DeviceLink):
    def __init__(self, rows: list[dict], clock, stale_s: float = 120.0, command_timeout_ms: int = 5000,
                 connect_timeout_s: float = 5.0, backoff_min_s: float = 0.5, backoff_max_s: float = 30.0,
                 t1_s: float = 15.0, t3_s: float = 20.0):
        for r in rows:
            for k in ("device_id", "host", "port"):
                if k not in r:
                    raise Iec104LinkError(f"iec104 endpoint {r.get('device_id', r)}: missing {k!r}")
            if r.get("termination", "sbo") not in TERMINATION:
                raise Iec104LinkError(f"iec104 endpoint {r['device_id']}: termination "
                                      f"{r['termination']!r} is not one of {', '.join(TERMINATION)}")
        self.clock = clock
        self.stale_s = stale_s
        self.command_timeout_s = command_timeout_ms / 1000.0
        self.lock = threading.Lock()
        self.commands_ok = 0
        self.commands_failed = 0
        tls = [_tls_context(r) for r in rows]
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="iec104-link", daemon=True)
        self.rtus = [_Rtu(r, Iec104Client(self.loop, r["host"], int(r["port"]), int(r.get("unit", 1)),
                                          ssl_context=ctx, server_hostname=name, t1_s=t1_s, t3_s=t3_s,
                                          backoff_min_s=backoff_min_s, backoff_max_s=backoff_max_s,
                                          name=r["device_id"]))
                     for r, (ctx, name) in zip(rows, tls)]
        self._thread.start()
        for r in self.rtus:
            self.loop.call_soon_threadsafe(r.client.start)
        self.wait_connected(timeout_s=connect_timeout_s)

    @classmethod
    def from_endpoints(cls, rows: list[dict], clock, **kw) -> "Iec104Link":
        """Build from endpoint-table rows {device_id, group?, host, port, unit?, sbo?, sbo_setpoints?,
        termination?, tls?}."""
        return cls(rows, clock, **kw)

    # --- connection ---------------------------------------------------------------------------
    def wait_connected(self, timeout_s: float = 5.0) -> bool:
        """Wait until every RTU link is up and its general interrogation has terminated (the
        RTU's whole picture arrived, not only the first ASDU of it)."""
        deadline = time.monotonic() + timeout_s
        for r in self.rtus:
            left = deadline - time.monotonic()
            if left <= 0 or not r.client.gi_done.wait(left):
                return False
        return True

    def _refresh_status(self) -> None:
        now = self.clock.now()
        for r in self.rtus:
            up = r.client.connected
            if up and not r.status.available and r.status.consecutive_failures:
                log.info("IEC 104 link to %s back after %d failed reads", r.info.device_id,
                         r.status.consecutive_failures)
            if up:
                r.status.available, r.status.reason = True, ""
                r.status.last_ok_t, r.status.consecutive_failures = now, 0
            else:
                r.status.available = False
                r.status.reason = f"IEC 104 link down: {r.client.last_error}"
                r.status.consecutive_failures += 1

    # --- DeviceLink -----------------------------------------------------------------------------
    def devices(self) -> list[DeviceInfo]:
        return [r.info for r in self.rtus]

    def status(self) -> dict[str, DeviceStatus]:
        return {r.info.device_id: r.status for r in self.rtus}

    def read(self) -> dict[str, dict[str, Value]]:
        self._refresh_status()
        now = self.clock.now()
        mono = time.monotonic()
        out: dict[str, dict[str, Value]] = {}
        with self.lock:
            for r in self.rtus:
                with r.client.points_lock:
                    pts = {ioa: p for ioa, p in r.client.points.items() if quantity_name(ioa) is not None}
                vals = {}
                for ioa, p in pts.items():
                    if p.seq != r.seen_seq.get(ioa):
                        r.seen_seq[ioa], r.updated[ioa] = p.seq, now  # a new message for the point
                    if not r.status.available:
                        quality = Quality.MISSING
                    elif p.quality & IV:
                        quality = Quality.INVALID
                    elif p.quality & (NT | SB | BL | OV) or mono - p.rx_mono > self.stale_s:
                        quality = Quality.STALE
                    else:
                        quality = Quality.GOOD
                    vals[quantity_name(ioa)] = Value(float(p.value), quality, r.updated[ioa])
                out[r.info.device_id] = vals
        return out

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        """Send a command and wait for the RTU's positive confirmation (False otherwise)."""
        rtu_id, _, element = device_id.partition("/")
        rtu = next((r for r in self.rtus if r.info.device_id == rtu_id), None)
        if rtu is None:
            return False
        try:
            if setpoint == "tap_pos" and element.startswith("trafo"):
                ioa, typ, sbo = TAP_CMD + int(element[5:]), C_SE_NC_1, rtu.sbo_setpoints
            elif setpoint == "closed" and element.startswith("switch"):
                ioa, typ, sbo = SWITCH_CMD + int(element[6:]), C_SC_NA_1, rtu.sbo
            elif setpoint == "step" and element.startswith("cap"):
                ioa, typ, sbo = CAP_CMD + int(element[3:]), C_SE_NC_1, rtu.sbo_setpoints
            else:
                return False
        except ValueError:
            return False
        if typ == C_SE_NC_1 and not math.isfinite(value):
            return self._failed(device_id, setpoint, value, "not a finite number")
        el = single_command(bool(value)) if typ == C_SC_NA_1 else float_setpoint(float(value))
        term = rtu.termination == "always" or (rtu.termination == "sbo" and sbo)
        res = rtu.client.command(typ, ioa, el, sbo, self.command_timeout_s, term)
        if res.ok:
            self.commands_ok += 1
            return True
        return self._failed(device_id, setpoint, value, res.reason)

    def _failed(self, device_id, setpoint, value, reason) -> bool:
        self.commands_failed += 1
        log.info("IEC 104 command %s.%s=%s not confirmed: %s", device_id, setpoint, value, reason)
        return False

    def close(self) -> None:
        if self.loop.is_closed():
            return

        async def stop():
            await asyncio.gather(*(r.client.stop() for r in self.rtus), return_exceptions=True)

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop).result(10)
        except Exception:
            log.debug("IEC 104 link close", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
