"""A small IEC 60870-5-104 outstation on asyncio: APCI framing, the I/S/U frame state machine
and the command semantics of IEC 60870-5-101/104 (the feeder RTU supplies points and handlers).

Written instead of using c104's server because a field integrator checks exactly the parts a
generic library decides for us: only cause 6 (activation) and 8 (deactivation) are commands;
select-before-operate with a select timeout and no termination for an unexecuted select; one
negative reply with the right cause (44 unknown type, 45 unknown cause, 46 unknown common
address, 47 unknown IOA) for anything we cannot do; a badly framed APDU closes the connection;
a command handler may refuse a value and the point stays usable; a time-tagged command (58, 63)
older than `max_command_delay_s` by the station clock (UTC, set by clock synchronisation 103)
or with an invalid tag is not executed (negative confirmation). Handlers run in a worker thread,
so a twin step holding the twin lock delays that command only, never the link (TESTFR, acks,
interrogation and other connections keep being answered).

With `ssl_context` (see `server_tls_context`) the outstation speaks IEC 104 over TLS the way
IEC 62351-3 profiles it: TLS 1.2 or later, and only clients holding a certificate that chains to
the configured CA are served (mutual authentication); a failed handshake is one log line.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import ssl
import stat
import struct
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Callable

log = logging.getLogger("device_emulators.iec104")

# type identifications
M_SP_NA_1, M_ME_NC_1, C_SC_NA_1, C_SE_NC_1, C_IC_NA_1, C_CI_NA_1, C_CS_NA_1 = 1, 13, 45, 50, 100, 101, 103
# causes of transmission
PERIODIC, SPONTANEOUS, ACT, ACTCON, DEACT, DEACTCON, ACTTERM, INROGEN = 1, 3, 6, 7, 8, 9, 10, 20
UNKNOWN_TYPE, UNKNOWN_COT, UNKNOWN_CA, UNKNOWN_IOA = 44, 45, 46, 47
# U-format functions (control octet 1)
STARTDT_ACT, STARTDT_CON, STOPDT_ACT, STOPDT_CON, TESTFR_ACT, TESTFR_CON = 0x07, 0x0B, 0x13, 0x23, 0x43, 0x83
GLOBAL_CA = 0xFFFF
C_SC_TA_1, C_SE_TC_1, C_TS_TA_1 = 58, 63, 107  # with a CP56Time2a time tag (IEC 104 only)
TIME_TAGGED = {C_SC_TA_1: C_SC_NA_1, C_SE_TC_1: C_SE_NC_1}  # the same command point takes both
ELEMENT_SIZE = {M_SP_NA_1: 1, M_ME_NC_1: 5, C_SC_NA_1: 1, C_SE_NC_1: 5, C_IC_NA_1: 1, C_CI_NA_1: 1,
                C_CS_NA_1: 7, C_SC_TA_1: 8, C_SE_TC_1: 12, C_TS_TA_1: 9}
MAX_ASDU = 249  # octets (APDU length 253 minus the 4 control octets)


class TlsFileError(ValueError):
    """A TLS file for the outstation cannot be used; one line naming it."""


def server_tls_context(cert_file: str, key_file: str, ca_file: str) -> ssl.SSLContext:
    """The outstation's TLS context: TLS >= 1.2, client certificate required and checked
    against `ca_file`. The key file must be private (mode 0600, as every secret here).
    (The controller builds its client side on its own: the two ends share no TLS code.)"""
    for what, f in (("cert_file", cert_file), ("key_file", key_file), ("ca_file", ca_file)):
        if not os.path.isfile(f):
            raise TlsFileError(f"{f}: {what} not found")
    mode = stat.S_IMODE(os.stat(key_file).st_mode)
    if mode & 0o077:
        raise TlsFileError(f"{key_file}: TLS key is open to its group or others (mode {mode:o}); "
                           f"run: chmod 600 {key_file}")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    try:
        ctx.load_verify_locations(cafile=ca_file)
    except ssl.SSLError as e:
        raise TlsFileError(f"{ca_file}: not a PEM CA certificate ({e.reason})") from None
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except ssl.SSLError as e:
        raise TlsFileError(f"{cert_file} / {key_file}: certificate and key do not load or match ({e.reason})") from None
    return ctx


@dataclass
class MonitorPoint:
    """A monitoring point: M_ME_NC_1 (float) or M_SP_NA_1 (single point)."""

    ioa: int
    type_id: int
    value: float = 0.0
    invalid: bool = False
    not_topical: bool = False
    cyclic: bool = True  # measured values are reported periodically; status points are not

    def element(self) -> bytes:
        q = (0x80 if self.invalid else 0) | (0x40 if self.not_topical else 0)
        if self.type_id == M_SP_NA_1:
            return bytes([q | (1 if self.value else 0)])
        return struct.pack("<f", self.value) + bytes([q])


@dataclass
class CommandPoint:
    """A command point; `handler(value) -> bool` validates and applies (False: refused)."""

    ioa: int
    type_id: int  # C_SC_NA_1 or C_SE_NC_1
    handler: Callable[[float], bool]
    sbo: bool = False  # select before operate required


def cp56_epoch_s(b: bytes) -> float | None:
    """UTC epoch seconds of a CP56Time2a time tag (7 octets: ms, minute, hour, day, month,
    year of the century); None when marked invalid (IV) or not a date."""
    if len(b) < 7 or b[2] & 0x80:
        return None
    ms = b[0] | (b[1] << 8)
    try:
        return datetime(2000 + (b[6] & 0x7F), b[5] & 0x0F, b[4] & 0x1F, b[3] & 0x1F, b[2] & 0x3F,
                        tzinfo=UTC).timestamp() + ms / 1000.0
    except ValueError:
        return None


def asdu(type_id: int, cot: int, ca: int, objects: list[tuple[int, bytes]], negative: bool = False) -> bytes:
    """One ASDU (COT 2 octets, CA 2, IOA 3: the 104 defaults), objects not in sequence."""
    head = bytes([type_id, len(objects), (cot & 0x3F) | (0x40 if negative else 0), 0]) + struct.pack("<H", ca)
    return head + b"".join(struct.pack("<I", ioa)[:3] + el for ioa, el in objects)


def with_cot(raw: bytes, cot: int, negative: bool, ca: int | None = None) -> bytes:
    """The received ASDU mirrored with another cause (how 101/104 confirm or refuse a command)."""
    b = bytearray(raw)
    b[2] = (cot & 0x3F) | (0x40 if negative else 0)
    if ca is not None:
        b[4:6] = struct.pack("<H", ca)
    return bytes(b)


def packed(type_id: int, cot: int, ca: int, points: list[MonitorPoint]) -> list[bytes]:
    """Monitoring points as few ASDUs as fit MAX_ASDU octets."""
    per = (MAX_ASDU - 6) // (3 + ELEMENT_SIZE[type_id])
    out = []
    for i in range(0, len(points), per):
        out.append(asdu(type_id, cot, ca, [(p.ioa, p.element()) for p in points[i:i + per]]))
    return out


class _Conn:
    """One client connection: sequence numbers, the k/w windows and the STARTDT state."""

    K, W = 12, 8

    def __init__(self, writer: asyncio.StreamWriter):
        self.writer = writer
        self.started = False
        self.ns = 0  # next send sequence number
        self.nr = 0  # next expected receive sequence number
        self.acked = 0  # our frames the client confirmed (its N(R))
        self.unacked_in = 0  # received I-frames not yet confirmed by us
        self.queue: list[bytes] = []  # ASDUs waiting for the k window
        self.selected: dict[int, tuple[float, tuple]] = {}  # ioa -> (deadline, (type, element w/o S/E))
        self.sent_at: list[float] = []  # send times of our I frames the client has not acknowledged
        self.last_rx = time.monotonic()  # t3: idle since
        self.testfr_at: float | None = None  # our TESTFR act waiting for its confirmation (t1)

    def _i_frame(self, body: bytes) -> bytes:
        f = bytes([0x68, len(body) + 4, (self.ns << 1) & 0xFF, (self.ns >> 7) & 0xFF,
                   (self.nr << 1) & 0xFF, (self.nr >> 7) & 0xFF]) + body
        self.ns = (self.ns + 1) % 32768
        self.unacked_in = 0
        self.sent_at.append(time.monotonic())
        return f

    def send(self, body: bytes) -> None:
        self.queue.append(body)
        self.flush()

    def flush(self) -> None:
        while self.queue and (self.ns - self.acked) % 32768 < self.K:
            self.writer.write(self._i_frame(self.queue.pop(0)))

    def u(self, code: int) -> None:
        self.writer.write(bytes([0x68, 4, code, 0, 0, 0]))

    def ack(self) -> None:
        self.writer.write(bytes([0x68, 4, 1, 0, (self.nr << 1) & 0xFF, (self.nr >> 7) & 0xFF]))
        self.unacked_in = 0


class Outstation:
    """IEC 104 outstation with one station (common address `ca`), on its own asyncio thread."""

    def __init__(self, host: str, port: int, ca: int = 1, cycle_s: float = 10.0, select_timeout_s: float = 5.0,
                 t2_s: float = 1.0, confirm_delay_s: float = 0.05, ssl_context: ssl.SSLContext | None = None,
                 t1_s: float = 15.0, t3_s: float = 20.0, max_command_delay_s: float | None = 30.0):
        self.host, self.port, self.ca = host, port, ca
        # a time-tagged command (58, 63) older than this by the station clock is not executed
        # (negative confirmation): a command delayed in the network must not act late. None: off
        self.max_command_delay_s = max_command_delay_s
        self.clock_offset_s = 0.0  # station clock = wall clock UTC + this; set by clock sync (103)
        self.stale_refused = 0
        self.ssl_context = ssl_context
        self.tls_refused = 0  # connections whose TLS handshake failed
        # an RTU's processing time before it answers a command or interrogation; also keeps
        # c104 <= 2.2.2 clients working (they lose a confirmation that arrives before they wait)
        self.confirm_delay_s = confirm_delay_s
        self.cycle_s, self.select_timeout_s, self.t2_s = cycle_s, select_timeout_s, t2_s
        # t1: an I frame or TESTFR of ours unconfirmed this long closes the link (a client that
        # stops acknowledging cannot make the send queue grow without end); t3: TESTFR when idle
        self.t1_s, self.t3_s = t1_s, t3_s
        self.points: dict[int, MonitorPoint] = {}
        self.commands: dict[int, CommandPoint] = {}
        self.conns: set[_Conn] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self.frames_in = 0

    # --- lifecycle (any thread) -------------------------------------------------------------------
    def start(self, timeout_s: float = 30.0) -> None:
        ready = threading.Event()
        err: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(asyncio.start_server(
                    self._serve, self.host, self.port, ssl=self._tls(), ssl_handshake_timeout=10.0 if self.ssl_context else None))
                self.port = self._server.sockets[0].getsockname()[1]
                loop.create_task(self._cyclic())
            except BaseException as e:  # noqa: BLE001 - reported to start()'s caller
                err.append(e)
                ready.set()
                return
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"iec104-{self.port}", daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s):
            raise TimeoutError(f"IEC 104 outstation {self.host}:{self.port} did not start")
        if err:
            raise err[0]

    def _tls(self) -> ssl.SSLContext | None:
        """The TLS context, its handshakes reporting refused clients (no certificate, one the CA
        did not sign, plain TCP) as one log line each: asyncio itself drops them silently."""
        ctx = self.ssl_context
        if ctx is None:
            return None
        outstation = self

        class Logged(ssl.SSLObject):
            def do_handshake(self):
                try:
                    return super().do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    raise
                except ssl.SSLError as e:
                    outstation.tls_refused += 1
                    log.info("IEC 104 %s:%s: TLS client refused: %s", outstation.host, outstation.port,
                             e.reason or e)
                    raise

        ctx.sslobject_class = Logged
        return ctx

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def close():
            self._server.close()
            for c in list(self.conns):
                c.writer.close()
            self.conns.clear()
            await asyncio.sleep(0)
            for t in asyncio.all_tasks():
                if t is not asyncio.current_task():
                    t.cancel()

        asyncio.run_coroutine_threadsafe(close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        self._loop = self._thread = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def has_clients(self) -> bool:
        return any(c.started for c in self.conns)

    def send(self, type_id: int, cot: int, points: list[MonitorPoint]) -> None:
        """Transmit points to every started connection (thread safe; no-op while stopped)."""
        if self._loop is None or not points:
            return
        frames = packed(type_id, cot, self.ca, points)

        def go():
            for c in self.conns:
                if c.started:
                    for f in frames:
                        c.send(f)

        self._loop.call_soon_threadsafe(go)

    # --- protocol -------------------------------------------------------------------------------
    async def _cyclic(self) -> None:
        while True:
            await asyncio.sleep(self.cycle_s)
            pts = [p for p in self.points.values() if p.cyclic and p.type_id == M_ME_NC_1]
            for f in packed(M_ME_NC_1, PERIODIC, self.ca, pts):
                for c in self.conns:
                    if c.started:
                        c.send(f)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        c = _Conn(writer)
        self.conns.add(c)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), self._wait_s(c))
                except TimeoutError:
                    if not self._timers(c):
                        return
                    continue
                if head[0] != 0x68 or not 4 <= head[1] <= 253:
                    log.info("IEC 104: bad APDU start %s, closing", head.hex())
                    return
                apdu = await reader.readexactly(head[1])
                self.frames_in += 1
                c.last_rx = time.monotonic()
                if not await self._frame(c, apdu):
                    return
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        except asyncio.CancelledError:  # stop(): end quietly (3.11's stream callback calls
            return  # task.exception() on a cancelled task and logs a traceback)
        finally:
            self.conns.discard(c)
            writer.close()

    def _wait_s(self, c: _Conn) -> float:
        """How long the next read may wait before a timer (t1, t2, t3) is due."""
        now = time.monotonic()
        due = [c.last_rx + self.t3_s if c.testfr_at is None else c.testfr_at + self.t1_s]
        if c.unacked_in:
            due.append(now + self.t2_s)
        if c.sent_at:
            due.append(c.sent_at[0] + self.t1_s)
        return max(0.01, min(due) - now)

    def _timers(self, c: _Conn) -> bool:
        """t2: acknowledge received I frames; t3: TESTFR act when idle; t1: our I frames or
        TESTFR unconfirmed -> False (close the link, as IEC 60870-5-104 5.2 says)."""
        now = time.monotonic()
        if c.sent_at and now - c.sent_at[0] >= self.t1_s:
            log.info("IEC 104: t1 expired, %d I frames unacknowledged, closing", len(c.sent_at))
            return False
        if c.testfr_at is not None and now - c.testfr_at >= self.t1_s:
            log.info("IEC 104: t1 expired, no TESTFR confirmation, closing")
            return False
        if c.unacked_in:
            c.ack()  # t2: confirm what we received without waiting for w frames
        if c.testfr_at is None and now - c.last_rx >= self.t3_s:
            c.testfr_at = now
            c.u(TESTFR_ACT)
        return True

    async def _frame(self, c: _Conn, apdu: bytes) -> bool:
        """Handle one APDU; False closes the connection (framing or sequence error)."""
        c1 = apdu[0]
        if c1 & 0x01 == 0:  # I format
            if len(apdu) < 4 + 6 or not c.started:
                return False
            ns = (apdu[0] >> 1) | (apdu[1] << 7)
            if ns != c.nr:
                log.info("IEC 104: sequence error (got %d, expected %d), closing", ns, c.nr)
                return False
            c.nr = (c.nr + 1) % 32768
            c.unacked_in += 1
            if not self._acked(c, apdu):
                return False
            await self._asdu(c, apdu[4:])
            if c.unacked_in >= c.W:
                c.ack()
            return True
        if len(apdu) != 4:
            return False
        if c1 & 0x03 == 0x01:  # S format
            if apdu[1] != 0:
                return False
            return self._acked(c, apdu)
        if apdu[1:] != b"\0\0\0" or c1 not in (STARTDT_ACT, STOPDT_ACT, TESTFR_ACT, TESTFR_CON):
            return False  # U format: exactly one function bit, the rest zero
        if c1 == STARTDT_ACT:
            c.started = True
            c.u(STARTDT_CON)
        elif c1 == STOPDT_ACT:
            c.started = False
            c.u(STOPDT_CON)
        elif c1 == TESTFR_ACT:
            c.u(TESTFR_CON)
        elif c1 == TESTFR_CON:
            c.testfr_at = None
        return True

    @staticmethod
    def _acked(c: _Conn, apdu: bytes) -> bool:
        """The client's N(R): frames up to it are confirmed. One acknowledging frames we never
        sent (or going backwards) is a sequence error: False closes the link."""
        nr = (apdu[2] >> 1) | (apdu[3] << 7)
        left = (c.ns - nr) % 32768  # our frames still unconfirmed after this
        if left > len(c.sent_at):
            log.info("IEC 104: N(R) %d acknowledges frames never sent (N(S) %d), closing", nr, c.ns)
            return False
        del c.sent_at[:len(c.sent_at) - left]
        c.acked = nr
        c.flush()
        return True

    async def _asdu(self, c: _Conn, raw: bytes) -> None:
        if self.confirm_delay_s:
            await asyncio.sleep(self.confirm_delay_s)
        type_id, vsq, cot, ca = raw[0], raw[1], raw[2] & 0x3F, raw[4] | (raw[5] << 8)
        n = vsq & 0x7F
        size = ELEMENT_SIZE.get(type_id)
        if size is None or type_id in (M_SP_NA_1, M_ME_NC_1):
            c.send(with_cot(raw, UNKNOWN_TYPE, True))
            return
        if n != 1 or vsq & 0x80 or len(raw) != 6 + 3 + size:
            c.send(with_cot(raw, UNKNOWN_TYPE, True))  # commands carry exactly one object
            return
        if ca != self.ca and not (ca == GLOBAL_CA and type_id in (C_IC_NA_1, C_CI_NA_1, C_CS_NA_1, C_TS_TA_1)):
            c.send(with_cot(raw, UNKNOWN_CA, True))
            return
        if cot not in (ACT, DEACT) or (cot == DEACT and type_id in (C_CS_NA_1, C_TS_TA_1)):
            c.send(with_cot(raw, UNKNOWN_COT, True))
            return
        ioa = raw[6] | (raw[7] << 8) | (raw[8] << 16)
        el = raw[9:]
        if type_id in (C_IC_NA_1, C_CI_NA_1, C_CS_NA_1, C_TS_TA_1):
            if ioa != 0:
                c.send(with_cot(raw, UNKNOWN_IOA, True))
            elif cot == DEACT:
                c.send(with_cot(raw, DEACTCON, False, self.ca))
            elif type_id == C_CS_NA_1:  # clock sync: the station clock follows the master's
                tag = cp56_epoch_s(el)
                if tag is not None:
                    self.clock_offset_s = tag - time.time()
                c.send(with_cot(raw, ACTCON, tag is None, self.ca))
            elif type_id == C_TS_TA_1:  # test command: confirmed
                c.send(with_cot(raw, ACTCON, False, self.ca))
            elif type_id == C_CI_NA_1:  # no integrated totals on this RTU
                c.send(with_cot(raw, ACTCON, False, self.ca))
                c.send(with_cot(raw, ACTTERM, False, self.ca))
            elif not 20 <= el[0] <= 36:  # QOI: 20 station, 21-36 groups; anything else refused
                c.send(with_cot(raw, ACTCON, True, self.ca))
            else:  # a group interrogation (no points are in groups here) is confirmed, empty
                c.send(with_cot(raw, ACTCON, False, self.ca))
                for t in (M_SP_NA_1, M_ME_NC_1) if el[0] == 20 else ():
                    for f in packed(t, INROGEN, self.ca, [p for p in self.points.values() if p.type_id == t]):
                        c.send(f)
                c.send(with_cot(raw, ACTTERM, False, self.ca))
            return
        base = TIME_TAGGED.get(type_id, type_id)
        cmd = self.commands.get(ioa)
        if cmd is None or cmd.type_id != base:
            c.send(with_cot(raw, UNKNOWN_IOA, True))
            return
        qi = 0 if base == C_SC_NA_1 else 4  # the qualifier octet (S/E bit); a time tag follows it
        select = bool(el[qi] & 0x80)
        value = float(el[0] & 1) if base == C_SC_NA_1 else struct.unpack("<f", el[:4])[0]
        plain = (type_id, el[:qi] + bytes([el[qi] & 0x7F]))  # the command without S/E and time tag
        if type_id in TIME_TAGGED and cot == ACT and self.max_command_delay_s is not None:
            tag = cp56_epoch_s(el[qi + 1:])
            delay = None if tag is None else time.time() + self.clock_offset_s - tag
            if delay is None or delay > self.max_command_delay_s:
                self.stale_refused += 1
                log.info("IEC 104: command %d to IOA %d refused: time tag %s", type_id, ioa,
                         "invalid" if delay is None else f"{delay:.1f} s old (limit {self.max_command_delay_s:g} s)")
                c.send(with_cot(raw, ACTCON, True))
                return
        now = time.monotonic()
        if cot == DEACT:  # cancel a pending selection
            had = c.selected.pop(ioa, None)
            c.send(with_cot(raw, DEACTCON, had is None or had[0] < now))
            return
        if select:
            if not cmd.sbo or (base == C_SE_NC_1 and not math.isfinite(value)):
                c.send(with_cot(raw, ACTCON, True))
                return
            c.selected[ioa] = (now + self.select_timeout_s, plain)
            c.send(with_cot(raw, ACTCON, False))
            return
        if cmd.sbo:
            sel = c.selected.pop(ioa, None)
            if sel is None or sel[0] < now or sel[1] != plain:
                c.send(with_cot(raw, ACTCON, True))  # no (live) selection of this very command
                return
        ok = await asyncio.to_thread(cmd.handler, value)
        c.send(with_cot(raw, ACTCON, not ok))
        if ok and cmd.sbo:
            c.send(with_cot(raw, ACTTERM, False))
