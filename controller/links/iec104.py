"""Iec104Link: the controller's IEC 60870-5-104 client (c104) for a feeder RTU.

The RTU appears as one device per endpoint (device id = the endpoint's device_id, kind
'rtu'). Monitoring points are learnt from the general interrogation and kept current by
spontaneous and cyclic transmissions; each becomes a quantity named by its address range
(the standard layout, see device_emulators/README.md: v_pu.<k>, line_loading_pct.<k>,
trafo_loading_pct.<k>, tap_pos.<k>, cap_step.<k>, head_p_kw, head_q_kvar, switch_closed.<k>).

Quality: IV bit -> invalid; NT bit, or no message for the point within `stale_s` -> stale;
link down -> missing and the device unavailable. Staleness is measured on the wall clock,
the time base the RTU reports in (deadband changes plus a cyclic refresh): in a lockstep run
simulated minutes pass in wall milliseconds and must not make quiet points look stale. The link
reconnects by itself, with exponential backoff between attempts (wall clock). Commands wait
for the RTU's positive confirmation: `write("rtu/trafo<k>", "tap_pos", v)` sends C_SE_NC_1,
`write("rtu/switch<k>", "closed", 0|1)` C_SC_NA_1, select-before-operate unless the
endpoint row says `sbo: false`; `write("rtu/cap<k>", "step", n)` a capacitor step (C_SE_NC_1).
"""

# no "from __future__ import annotations": c104 checks the real annotation objects of callbacks

import logging
import threading
import time

import c104

from controller.links.base import DeviceInfo, DeviceLink, DeviceStatus, Quality, Value

log = logging.getLogger("controller.iec104")

RANGES = [(1000, 2000, "v_pu"), (2000, 3000, "line_loading_pct"), (3000, 3500, "trafo_loading_pct"),
          (3500, 3600, "tap_pos"), (3600, 4000, "cap_step"), (5000, 6000, "switch_closed")]
HEAD = {4000: "head_p_kw", 4001: "head_q_kvar"}
SWITCH_CMD, TAP_CMD, CAP_CMD = 6000, 7000, 7500


def quantity_name(ioa: int) -> str | None:
    if ioa in HEAD:
        return HEAD[ioa]
    for lo, hi, name in RANGES:
        if lo <= ioa < hi:
            return f"{name}.{ioa - lo}"
    return None


def _on_new_point(client: c104.Client, station: c104.Station, io_address: int,
                  point_type: c104.Type) -> None:
    """Points the RTU reports are learnt as they arrive (general interrogation)."""
    station.add_point(io_address=io_address, type=point_type)


class Iec104LinkError(ValueError):
    """Bad endpoint configuration; one line."""


class _Rtu:
    def __init__(self, row: dict, client: c104.Client):
        self.info = DeviceInfo(row["device_id"], row.get("group", "rtu"), "rtu", row.get("bus"))
        self.ca = int(row.get("unit", 1))
        self.sbo = bool(row.get("sbo", True))
        self.conn = client.add_connection(ip=row["host"], port=int(row["port"]), init=c104.Init.ALL)
        self.station = self.conn.add_station(common_address=self.ca)
        self.seen_at: dict[int, object] = {}  # ioa -> processed_at of the last message seen
        self.updated: dict[int, float] = {}  # ioa -> controller time that message was seen
        self.seen_wall: dict[int, float] = {}  # ioa -> monotonic time that message was seen
        self.status = DeviceStatus(available=False, reason="not connected yet")
        self.next_try = 0.0  # monotonic time of the next reconnect attempt
        self.backoff_s = 0.0


class Iec104Link(DeviceLink):
    def __init__(self, rows: list[dict], clock, stale_s: float = 120.0, command_timeout_ms: int = 3000,
                 connect_timeout_s: float = 5.0, backoff_min_s: float = 0.5, backoff_max_s: float = 30.0):
        for r in rows:
            for k in ("device_id", "host", "port"):
                if k not in r:
                    raise Iec104LinkError(f"iec104 endpoint {r.get('device_id', r)}: missing {k!r}")
        self.clock = clock
        self.stale_s = stale_s
        self.backoff = (backoff_min_s, backoff_max_s)
        self.lock = threading.Lock()
        self.client = c104.Client(tick_rate_ms=50, command_timeout_ms=command_timeout_ms)
        self.client.on_new_point(callable=_on_new_point)
        self.rtus = [_Rtu(r, self.client) for r in rows]
        self.commands_ok = 0
        self.commands_failed = 0
        self.client.start()
        self.wait_connected(timeout_s=connect_timeout_s)

    @classmethod
    def from_endpoints(cls, rows: list[dict], clock, **kw) -> "Iec104Link":
        """Build from endpoint-table rows {device_id, group?, host, port, unit?, sbo?}."""
        return cls(rows, clock, **kw)

    # --- connection ---------------------------------------------------------------------------
    def wait_connected(self, timeout_s: float = 5.0, settle_s: float = 0.3) -> bool:
        """Wait for every RTU link, then run a general interrogation where no points are known;
        done once the learnt points stop growing for `settle_s` (a GI answer spans several ASDUs:
        the first one alone is not the RTU's picture)."""
        deadline = time.monotonic() + timeout_s
        asked = set()
        seen, steady_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            if all(r.conn.is_connected and self._monitoring(r) for r in self.rtus):
                n = sum(len(self._monitoring(r)) for r in self.rtus)
                if n != seen:
                    seen, steady_since = n, time.monotonic()
                elif time.monotonic() - steady_since >= settle_s:
                    return True
            for r in self.rtus:  # the connect-time start-up did not complete: do it ourselves
                if r.conn.is_connected and not self._monitoring(r) and id(r) not in asked:
                    if r.conn.state == c104.ConnectionState.OPEN_MUTED:
                        r.conn.unmute()  # STARTDT: without it the RTU sends nothing
                    self.interrogate(r)
                    asked.add(id(r))
            time.sleep(0.05)
        return False

    @staticmethod
    def _monitoring(r: _Rtu) -> list:
        return [p for p in r.station.points if quantity_name(p.io_address) is not None]

    def interrogate(self, r: _Rtu) -> bool:
        # not waiting for the confirmation: the answers arrive through on_new_point, which
        # needs the GIL that a blocking wait here would hold
        return bool(r.conn.interrogation(common_address=r.ca, cause=c104.Cot.ACTIVATION,
                                         qualifier=c104.Qoi.STATION, wait_for_response=False))

    def _refresh_status(self) -> None:
        now = self.clock.now()
        mono = time.monotonic()
        for r in self.rtus:
            up = r.conn.is_connected
            if up and not r.status.available:  # (re)connected: refresh everything
                if r.conn.state == c104.ConnectionState.OPEN_MUTED:
                    r.conn.unmute()
                self.interrogate(r)
                if r.status.consecutive_failures:
                    log.info("IEC 104 link to %s back after %d failed reads", r.info.device_id,
                             r.status.consecutive_failures)
            if up:
                r.status.available, r.status.reason = True, ""
                r.status.last_ok_t, r.status.consecutive_failures = now, 0
                r.backoff_s = 0.0
            else:
                r.status.available = False
                r.status.reason = "IEC 104 link down"
                r.status.consecutive_failures += 1
                if mono >= r.next_try:  # reconnect, backing off between attempts
                    r.backoff_s = min(max(2 * r.backoff_s, self.backoff[0]), self.backoff[1])
                    r.next_try = mono + r.backoff_s
                    r.conn.connect()  # non-blocking: c104 connects in its own thread

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
                vals = {}
                for pt in self._monitoring(r):
                    ioa = pt.io_address
                    seen = pt.processed_at
                    if ioa not in r.updated or seen != r.seen_at.get(ioa):
                        r.seen_at[ioa], r.updated[ioa] = seen, now  # a new message for the point
                        r.seen_wall[ioa] = mono
                    q = pt.quality
                    flagged = q is not None and not q.is_good()
                    if not r.status.available:
                        quality = Quality.MISSING
                    elif flagged and c104.Quality.Invalid in q:
                        quality = Quality.INVALID
                    elif flagged or mono - r.seen_wall[ioa] > self.stale_s:
                        quality = Quality.STALE
                    else:
                        quality = Quality.GOOD
                    vals[quantity_name(ioa)] = Value(float(pt.value), quality, r.updated[ioa])
                out[r.info.device_id] = vals
        return out

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        """Send a command and wait for the RTU's positive confirmation (False otherwise)."""
        rtu_id, _, element = device_id.partition("/")
        rtu = next((r for r in self.rtus if r.info.device_id == rtu_id), None)
        if rtu is None or not rtu.conn.is_connected:
            return False
        try:
            if setpoint == "tap_pos" and element.startswith("trafo"):
                ioa, typ = TAP_CMD + int(element[5:]), c104.Type.C_SE_NC_1
            elif setpoint == "closed" and element.startswith("switch"):
                ioa, typ = SWITCH_CMD + int(element[6:]), c104.Type.C_SC_NA_1
            elif setpoint == "step" and element.startswith("cap"):
                ioa, typ = CAP_CMD + int(element[3:]), c104.Type.C_SE_NC_1
            else:
                return False
        except ValueError:
            return False
        with self.lock:
            pt = rtu.station.get_point(io_address=ioa) or rtu.station.add_point(io_address=ioa, type=typ)
        if typ == c104.Type.C_SC_NA_1:
            pt.value = bool(value)
            pt.command_mode = (c104.CommandMode.SELECT_AND_EXECUTE if rtu.sbo
                               else c104.CommandMode.DIRECT)
        else:
            pt.value = float(value)
        ok = bool(pt.transmit(cause=c104.Cot.ACTIVATION))
        if ok:
            self.commands_ok += 1
        else:
            self.commands_failed += 1
            log.info("IEC 104 command %s.%s=%s not confirmed", device_id, setpoint, value)
        return ok

    def close(self) -> None:
        self.client.stop()
