"""An IEC 60870-5-104 controlling station (client) on asyncio, optionally over TLS (IEC 62351-3).

Why our own and not c104's client: c104 2.2.x loses a command confirmation that arrives before
its blocking transmit starts waiting (select-before-operate then never executes; seen failing on
a busy machine), and its TLS client cannot verify a server at all (no way to set the hostname its
mbedtls requires). Here every command registers for its replies before it is sent, replies are
matched by type, address and information element, and every wait has a deadline.

One `Iec104Client` per outstation connection, all running on one event loop thread (the caller
owns the loop). The connection follows IEC 60870-5-104: STARTDT before data, general
interrogation at every (re)connection, I-frame sequence numbers checked, k/w windows, t1 (no
acknowledgement or TESTFR answer: close), t2 (acknowledge received I-frames), t3 (TESTFR when
idle); reconnects with exponential backoff. Monitoring types: single/double points, scaled,
normalised and float measurements, with or without a CP56Time2a time tag.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import struct
import threading
import time
from dataclasses import dataclass

log = logging.getLogger("controller.iec104")

# causes of transmission
ACT, ACTCON, DEACT, DEACTCON, ACTTERM, INROGEN = 6, 7, 8, 9, 10, 20
UNKNOWN_TYPE, UNKNOWN_COT, UNKNOWN_CA, UNKNOWN_IOA = 44, 45, 46, 47
COT_NAMES = {UNKNOWN_TYPE: "unknown type", UNKNOWN_COT: "unknown cause", UNKNOWN_CA: "unknown common address",
             UNKNOWN_IOA: "unknown address"}
# type identifications
C_SC_NA_1, C_DC_NA_1, C_SE_NA_1, C_SE_NB_1, C_SE_NC_1, C_IC_NA_1 = 45, 46, 48, 49, 50, 100
STARTDT_ACT, STARTDT_CON, STOPDT_ACT, STOPDT_CON, TESTFR_ACT, TESTFR_CON = 0x07, 0x0B, 0x13, 0x23, 0x43, 0x83
# monitoring types: (information element octets, decoder(element) -> (value, quality octet))
_MONITOR = {
    1: (1, lambda e: (float(e[0] & 1), e[0] & 0xF0)),  # M_SP_NA_1 (SIQ)
    3: (1, lambda e: (float(e[0] & 3 == 2), (e[0] & 0xF0) | (0x80 if e[0] & 3 in (0, 3) else 0))),  # M_DP_NA_1
    9: (3, lambda e: (struct.unpack("<h", e[:2])[0] / 32768.0, e[2])),  # M_ME_NA_1 normalised
    11: (3, lambda e: (float(struct.unpack("<h", e[:2])[0]), e[2])),  # M_ME_NB_1 scaled
    13: (5, lambda e: (struct.unpack("<f", e[:4])[0], e[4])),  # M_ME_NC_1 short float
}
for _t, _base in ((30, 1), (31, 3), (34, 9), (35, 11), (36, 13)):  # the same with CP56Time2a
    _MONITOR[_t] = (_MONITOR[_base][0] + 7, _MONITOR[_base][1])
COMMAND_TYPES = {45: 1, 46: 1, 47: 1, 48: 3, 49: 3, 50: 5, 100: 1, 101: 1, 103: 7}  # element octets
IV, NT, SB, BL, OV = 0x80, 0x40, 0x20, 0x10, 0x01


@dataclass
class PointValue:
    """The latest value of a monitoring point and what the outstation said about it."""

    value: float
    quality: int  # quality descriptor octet (IV 0x80, NT 0x40, SB 0x20, BL 0x10, OV 0x01)
    type_id: int
    seq: int  # messages received for the point so far
    rx_mono: float  # monotonic time of the last message


@dataclass
class CommandResult:
    ok: bool
    reason: str = ""  # why not: "select refused (COT 7, negative)", "no confirmation within 5.0 s", ...


class Iec104Client:
    """A connection to one outstation (common address `ca`). Start with `start()` on the
    caller's event loop thread; `command()` and the point table are safe from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, ca: int = 1,
                 ssl_context: ssl.SSLContext | None = None, server_hostname: str | None = None,
                 t0_s: float = 10.0, t1_s: float = 15.0, t2_s: float = 1.0, t3_s: float = 20.0,
                 k: int = 12, w: int = 8, backoff_min_s: float = 0.5, backoff_max_s: float = 30.0, name: str = ""):
        self.loop, self.host, self.port, self.ca = loop, host, port, ca
        self.ssl_context, self.server_hostname = ssl_context, server_hostname
        self.t0_s, self.t1_s, self.t2_s, self.t3_s, self.k, self.w = t0_s, t1_s, t2_s, t3_s, k, w
        self.backoff = (backoff_min_s, backoff_max_s)
        self.backoff_s = 0.0  # wait before the next connection attempt (grows while it fails)
        self.name = name or f"{host}:{port}"
        self.points: dict[int, PointValue] = {}
        self.points_lock = threading.Lock()
        self.connected = False  # STARTDT confirmed on a live connection
        self.gi_done = threading.Event()  # the general interrogation of this connection terminated
        self.last_error = "not connected yet"
        self.sessions = 0  # connections that reached STARTDT
        self.unexpected = 0  # replies no command was waiting for
        self._task: asyncio.Task | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._waiters: dict[tuple[int, int], asyncio.Queue] = {}
        self._cmd_lock: asyncio.Lock | None = None
        self._startdt: asyncio.Future | None = None
        self._reset_session()

    # --- lifecycle (event loop thread) ------------------------------------------------------------
    def start(self) -> None:
        self._cmd_lock = asyncio.Lock()
        self._task = self.loop.create_task(self._supervise())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # stopping anyway
                log.debug("IEC 104 %s: stop", self.name, exc_info=True)
        self._drop()

    def _reset_session(self) -> None:
        self.ns = self.nr = self.acked = 0
        self.unacked_in, self.first_unacked_in = 0, 0.0
        self.sent: list[tuple[int, float]] = []  # (N(S), monotonic send time) not yet acknowledged
        self.queue: list[bytes] = []  # ASDUs waiting for the k window
        self.last_rx = time.monotonic()
        self.testfr_at: float | None = None

    def _drop(self) -> None:
        self.connected = False
        self.gi_done.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        for q in self._waiters.values():
            q.put_nowait(None)  # wake every waiting command: the link is gone

    async def _supervise(self) -> None:
        while True:
            try:
                await self._session()
            except asyncio.CancelledError:
                raise
            except (TimeoutError, OSError, asyncio.IncompleteReadError, ssl.SSLError, ProtocolError) as e:
                self.last_error = _describe(e)
                if self.connected:
                    log.warning("IEC 104 %s: connection lost: %s", self.name, self.last_error)
                else:
                    log.info("IEC 104 %s: cannot connect: %s", self.name, self.last_error)
            finally:
                self._drop()
            self.backoff_s = min(max(2 * self.backoff_s, self.backoff[0]), self.backoff[1])
            await asyncio.sleep(self.backoff_s)

    async def _session(self) -> None:
        self._reset_session()
        reader, writer = await asyncio.wait_for(asyncio.open_connection(
            self.host, self.port, ssl=self.ssl_context,
            server_hostname=(self.server_hostname or self.host) if self.ssl_context else None), self.t0_s)
        self._writer = writer
        self._startdt = self.loop.create_future()
        self._u(STARTDT_ACT)
        timers = self.loop.create_task(self._timers())
        try:
            rx = self.loop.create_task(self._receive(reader))
            done, _ = await asyncio.wait({rx, self._startdt}, timeout=self.t1_s,
                                         return_when=asyncio.FIRST_COMPLETED)
            if self._startdt not in done:
                rx.cancel()
                if rx in done:
                    rx.result()
                raise ProtocolError("no STARTDT confirmation")
            self.connected, self.backoff_s, self.last_error = True, 0.0, ""
            self.sessions += 1
            log.info("IEC 104 %s: connected%s", self.name, " (TLS)" if self.ssl_context else "")
            self.send_asdu(_asdu(C_IC_NA_1, ACT, self.ca, 0, bytes([20])))  # general interrogation
            await rx
        finally:
            timers.cancel()

    # --- receiving ---------------------------------------------------------------------------------
    async def _receive(self, reader: asyncio.StreamReader) -> None:
        while True:
            head = await reader.readexactly(2)
            if head[0] != 0x68 or not 4 <= head[1] <= 253:
                raise ProtocolError(f"bad APDU start {head.hex()}")
            apdu = await reader.readexactly(head[1])
            self.last_rx, self.testfr_at = time.monotonic(), None
            self._frame(apdu)

    def _frame(self, apdu: bytes) -> None:
        c1 = apdu[0]
        if c1 & 1 == 0:  # I format
            if len(apdu) < 10:
                raise ProtocolError("short I frame")
            ns = (apdu[0] >> 1) | (apdu[1] << 7)
            if ns != self.nr:
                raise ProtocolError(f"sequence error: got N(S) {ns}, expected {self.nr}")
            self.nr = (self.nr + 1) % 32768
            if not self.unacked_in:
                self.first_unacked_in = time.monotonic()
            self.unacked_in += 1
            self._acked(apdu)
            self._asdu(apdu[4:])
            if self.unacked_in >= self.w:
                self._s()
        elif c1 & 3 == 1:  # S format
            self._acked(apdu)
        elif c1 == STARTDT_CON:
            if self._startdt is not None and not self._startdt.done():
                self._startdt.set_result(True)
        elif c1 == TESTFR_ACT:
            self._u(TESTFR_CON)
        elif c1 not in (TESTFR_CON, STOPDT_CON):
            raise ProtocolError(f"unexpected U frame {c1:#04x}")

    def _acked(self, apdu: bytes) -> None:
        nr = (apdu[2] >> 1) | (apdu[3] << 7)
        if (self.ns - nr) % 32768 > len(self.sent):
            raise ProtocolError(f"acknowledgement of frames never sent: N(R) {nr}, N(S) {self.ns}")
        self.acked = nr
        self.sent = [(n, t) for n, t in self.sent if (n - nr) % 32768 < (self.ns - nr) % 32768]
        self._flush()

    def _asdu(self, raw: bytes) -> None:
        type_id, vsq, cot_octet = raw[0], raw[1], raw[2]
        if len(raw) < 6:
            return
        cot, negative, ca = cot_octet & 0x3F, bool(cot_octet & 0x40), raw[4] | (raw[5] << 8)
        if type_id in COMMAND_TYPES:
            ioa = raw[6] | (raw[7] << 8) | (raw[8] << 16) if len(raw) >= 9 else -1
            if type_id == C_IC_NA_1 and cot == ACTTERM:
                self.gi_done.set()
            q = self._waiters.get((type_id, ioa))
            if q is not None:
                q.put_nowait((cot, negative, raw[9:]))
            elif type_id != C_IC_NA_1:
                self.unexpected += 1
                log.info("IEC 104 %s: reply no command waits for: type %d IOA %d COT %d%s", self.name,
                         type_id, ioa, cot, " negative" if negative else "")
            return
        spec = _MONITOR.get(type_id)
        if spec is None or ca != self.ca:
            return
        size, decode = spec
        n, seq = vsq & 0x7F, bool(vsq & 0x80)
        now = time.monotonic()
        pos = 6
        with self.points_lock:
            for i in range(n):
                if seq:
                    if i == 0:
                        base, pos = raw[6] | (raw[7] << 8) | (raw[8] << 16), 9
                    ioa = base + i
                else:
                    if pos + 3 > len(raw):
                        break
                    ioa = raw[pos] | (raw[pos + 1] << 8) | (raw[pos + 2] << 16)
                    pos += 3
                el = raw[pos:pos + size]
                if len(el) < size:
                    break
                pos += size
                value, q = decode(el)
                old = self.points.get(ioa)
                self.points[ioa] = PointValue(value, q, type_id, (old.seq + 1) if old else 1, now)

    # --- sending (event loop thread) ---------------------------------------------------------------
    def _u(self, code: int) -> None:
        if self._writer is not None:
            self._writer.write(bytes([0x68, 4, code, 0, 0, 0]))

    def _s(self) -> None:
        if self._writer is not None:
            self._writer.write(bytes([0x68, 4, 1, 0, (self.nr << 1) & 0xFF, (self.nr >> 7) & 0xFF]))
        self.unacked_in = 0

    def send_asdu(self, body: bytes) -> None:
        self.queue.append(body)
        self._flush()

    def _flush(self) -> None:
        while self._writer is not None and self.queue and (self.ns - self.acked) % 32768 < self.k:
            body = self.queue.pop(0)
            self._writer.write(bytes([0x68, len(body) + 4, (self.ns << 1) & 0xFF, (self.ns >> 7) & 0xFF,
                                      (self.nr << 1) & 0xFF, (self.nr >> 7) & 0xFF]) + body)
            self.sent.append((self.ns, time.monotonic()))
            self.ns = (self.ns + 1) % 32768
            self.unacked_in = 0  # our I frame carried the acknowledgement

    async def _timers(self) -> None:
        while True:
            await asyncio.sleep(min(0.1, self.t2_s / 2))
            now = time.monotonic()
            if self.sent and now - self.sent[0][1] > self.t1_s:
                self._fail("t1: no acknowledgement of sent I frames")
                return
            if self.testfr_at is not None and now - self.testfr_at > self.t1_s:
                self._fail("t1: no TESTFR confirmation")
                return
            if self.unacked_in and now - self.first_unacked_in >= self.t2_s:
                self._s()
            if self.testfr_at is None and now - self.last_rx >= self.t3_s:
                self.testfr_at = now
                self._u(TESTFR_ACT)

    def _fail(self, why: str) -> None:
        self.last_error = why
        log.warning("IEC 104 %s: %s, closing", self.name, why)
        if self._writer is not None:
            self._writer.transport.abort()

    # --- commands (any thread through `command`, the loop through `_command`) ----------------------
    def command(self, type_id: int, ioa: int, element: bytes, select_first: bool, timeout_s: float,
                await_termination: bool) -> CommandResult:
        """Send a command and wait for its confirmation (and termination where asked); with
        `select_first`, select (S/E = 1) and execute only after a positive select confirmation.
        Thread safe; never waits longer than about 3 x timeout_s."""
        if self.loop.is_closed():
            return CommandResult(False, "client stopped")
        fut = asyncio.run_coroutine_threadsafe(
            self._command(type_id, ioa, element, select_first, timeout_s, await_termination), self.loop)
        try:
            return fut.result(4 * timeout_s + 1.0)
        except TimeoutError:
            fut.cancel()
            return CommandResult(False, "command did not finish in time")

    async def _command(self, type_id, ioa, element, select_first, timeout_s, await_termination) -> CommandResult:
        if not self.connected:
            return CommandResult(False, f"link down ({self.last_error})")
        async with self._cmd_lock:  # one command at a time: replies cannot be mistaken for another's
            key = (type_id, ioa)
            q: asyncio.Queue = asyncio.Queue()
            early: list = []  # replies that came before the one awaited
            self._waiters[key] = q
            try:
                if select_first:
                    sel = element[:-1] + bytes([element[-1] | 0x80])
                    self.send_asdu(_asdu(type_id, ACT, self.ca, ioa, sel))
                    r = await self._expect(q, early, sel, ACTCON, timeout_s)
                    if not r.ok:
                        if r.reason.startswith("no "):  # unknown state: break the selection
                            self.send_asdu(_asdu(type_id, DEACT, self.ca, ioa, sel))
                        return CommandResult(False, "select: " + r.reason)
                self.send_asdu(_asdu(type_id, ACT, self.ca, ioa, element))
                r = await self._expect(q, early, element, ACTCON, timeout_s)
                if not r.ok or not await_termination:
                    return r
                return await self._expect(q, early, element, ACTTERM, timeout_s)
            finally:
                self._waiters.pop(key, None)

    async def _expect(self, q: asyncio.Queue, early: list, element: bytes, cot: int,
                      timeout_s: float) -> CommandResult:
        """The reply with cause `cot` to the command carrying `element` (replies to other
        elements, e.g. a late answer to an earlier command, are skipped); a negative reply of
        any cause refuses it."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, (c, neg, el) in enumerate(early):  # e.g. a termination before its confirmation
                if c == cot and el == element:
                    early.pop(i)
                    return CommandResult(not neg, "" if not neg else f"COT {c} negative")
            left = deadline - time.monotonic()
            if left <= 0:
                return CommandResult(False, f"no {'confirmation' if cot == ACTCON else 'termination'} "
                                            f"within {timeout_s:g} s")
            try:
                item = await asyncio.wait_for(q.get(), left)
            except TimeoutError:
                continue
            if item is None:
                return CommandResult(False, f"link lost ({self.last_error})")
            c, neg, el = item
            if el != element:
                self.unexpected += 1
                continue
            if neg or c in COT_NAMES:
                return CommandResult(False, COT_NAMES.get(c, f"COT {c} negative"))
            if c == cot:
                return CommandResult(True)
            early.append(item)


class ProtocolError(Exception):
    """The outstation broke the 104 framing or sequence rules: the connection is closed."""


def _asdu(type_id: int, cot: int, ca: int, ioa: int, element: bytes) -> bytes:
    """One ASDU with one object (COT 2 octets with originator 0, CA 2, IOA 3: the 104 defaults)."""
    return bytes([type_id, 1, cot & 0x3F, 0]) + struct.pack("<H", ca) + struct.pack("<I", ioa)[:3] + element


def _describe(e: BaseException) -> str:
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ssl.SSLError):
        return f"TLS: {e.reason or e}"
    if isinstance(e, asyncio.TimeoutError):
        return "timed out"
    if isinstance(e, asyncio.IncompleteReadError):
        return "closed by the outstation"
    return str(e) or type(e).__name__


def single_command(on: bool) -> bytes:
    """C_SC_NA_1 element: SCO with the state, no qualifier, execute."""
    return bytes([1 if on else 0])


def float_setpoint(value: float) -> bytes:
    """C_SE_NC_1 element: IEEE 754 value and QOS (QL 0, execute)."""
    return struct.pack("<f", value) + b"\0"
