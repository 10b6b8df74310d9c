"""IEC 60870-5-104 link-layer timers, acknowledgement checks, interrogation qualifiers and the
104-only time-tagged and test commands of the emulators' outstation,
seen from a raw socket (no IEC 104 library): t1 closes a link whose client stops acknowledging
I frames (before: the send queue grew for ever on a held connection) or leaves a TESTFR
unanswered; t3 sends TESTFR act on an idle link; an N(R) acknowledging frames never sent is a
sequence error that closes the link. Short timers (t1 1 s, t3 0.5 s) keep the test fast; every
wait is generous so a busy machine only makes it slower."""

import socket
import struct
import time
from datetime import UTC, datetime

import pytest
from iec104_raw import Raw104, command, interrogation

from device_emulators.iec104 import (
    C_SC_NA_1,
    C_SE_NC_1,
    M_ME_NC_1,
    CommandPoint,
    MonitorPoint,
    Outstation,
)

STARTDT_ACT, STARTDT_CON, TESTFR_ACT, TESTFR_CON = 0x07, 0x0B, 0x43, 0x83


def make(**timers) -> Outstation:
    os_ = Outstation("127.0.0.1", 0, cycle_s=3600, **timers)
    os_.points = {1000 + k: MonitorPoint(1000 + k, M_ME_NC_1, 1.0 + k / 1000) for k in range(200)}
    os_.start()
    return os_


@pytest.fixture()
def outstation():
    os_ = make(t1_s=1.0, t3_s=0.5)
    yield os_
    os_.stop()


def closed_within(sock: socket.socket, timeout_s: float, answer_testfr: bool = False) -> bool:
    """Read (never acknowledging I frames) until the outstation closes the link or time is up."""
    deadline = time.monotonic() + timeout_s
    buf = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True
        if not chunk:
            return True
        buf += chunk
        if answer_testfr and bytes([0x68, 4, TESTFR_ACT, 0, 0, 0]) in buf:
            buf = buf.replace(bytes([0x68, 4, TESTFR_ACT, 0, 0, 0]), b"")
            sock.sendall(bytes([0x68, 4, TESTFR_CON, 0, 0, 0]))
    return False


def started(port: int) -> Raw104:
    c = Raw104(port)
    c.startdt()
    return c


def test_t1_closes_a_client_that_stops_acknowledging(outstation):
    c = started(outstation.port)
    try:
        c.send(interrogation())  # ~20 ASDUs: the k window (12) fills, nothing is acknowledged
        assert closed_within(c.sock, 20.0, answer_testfr=True)
        assert not outstation.conns
    finally:
        c.close()


def test_t3_testfr_when_idle_and_t1_when_it_goes_unanswered(outstation):
    alive, dead = started(outstation.port), started(outstation.port)
    try:
        # the idle link gets TESTFR act; answered, the link stays up (three rounds)
        for _ in range(3):
            kind, code = alive.recv(10.0)
            assert (kind, code) == ("U", TESTFR_ACT)
            alive.u(TESTFR_CON)
        alive.u(TESTFR_ACT)  # and it still answers us
        assert alive.recv(10.0) == ("U", TESTFR_CON)
        # the link that never answers its TESTFR is closed after t1
        assert closed_within(dead.sock, 20.0)
    finally:
        alive.close()
        dead.close()


def test_acknowledging_frames_never_sent_closes_the_link(outstation):
    c = started(outstation.port)
    try:
        c.raw(bytes([0x68, 4, 1, 0, 5 << 1, 0]))  # S frame: N(R) 5, nothing was sent yet
        assert closed_within(c.sock, 10.0)
    finally:
        c.close()
    # a well-behaved client acknowledging as frames arrive is served the whole interrogation
    # through the k window (default timers: this raw client does not answer TESTFR)
    plain = make()
    ok = started(plain.port)
    try:
        ok.send(interrogation())
        got = ok.asdus(quiet_s=2.0)
        assert sum(len(a.objects) for a in got if a.type_id == M_ME_NC_1) == 200
    finally:
        ok.close()
        plain.stop()


def test_interrogation_qualifiers():
    """QOI 20 (station) answers every point; a group (21-36: no points are in groups here) is
    confirmed and terminated with no data; other qualifiers get one negative confirmation."""
    plain = make()
    c = started(plain.port)
    try:
        for qoi, want in ((21, [(100, 7, False), (100, 10, False)]), (36, [(100, 7, False), (100, 10, False)]),
                          (0, [(100, 7, True)]), (99, [(100, 7, True)]), (19, [(100, 7, True)])):
            c.send(command(100, 0, bytes([qoi])))
            got = c.asdus(quiet_s=1.0)
            assert [(a.type_id, a.cot, a.negative) for a in got] == want, qoi
        c.send(interrogation())
        got = c.asdus(quiet_s=2.0)
        assert sum(len(a.objects) for a in got if a.type_id == M_ME_NC_1 and a.cot == 20) == 200
    finally:
        c.close()
        plain.stop()


def cp56(t: float, invalid: bool = False) -> bytes:
    """CP56Time2a of UTC epoch seconds t (written here from the standard, not by the outstation)."""
    d = datetime.fromtimestamp(t, UTC)
    ms = d.second * 1000 + d.microsecond // 1000
    return struct.pack("<H", ms) + bytes([d.minute | (0x80 if invalid else 0), d.hour, d.day | (d.isoweekday() << 5),
                                          d.month, d.year - 2000])


def test_time_tagged_and_test_commands():
    """C_SC_TA_1 (58) and C_SE_TC_1 (63) act on the same points as 45 and 50 (select-before-
    operate kept, the time tag ignored in the select/execute match); C_TS_TA_1 (107) is
    confirmed; an unknown address still gets one COT 47. A time-tagged command older than
    max_command_delay_s by the station clock, or with an invalid tag, is refused (negative
    confirmation, nothing done); clock synchronisation (103) sets the station clock."""
    got = {}
    plain = make()
    plain.commands = {6000: CommandPoint(6000, C_SC_NA_1, lambda v: got.__setitem__("sw", v) or True, sbo=True),
                      7000: CommandPoint(7000, C_SE_NC_1, lambda v: got.__setitem__("tap", v) or True)}
    c = started(plain.port)
    try:
        now = time.time()
        c.send(command(58, 6000, bytes([0x81]) + cp56(now)))  # select, close
        c.send(command(58, 6000, bytes([0x01]) + cp56(now + 0.2)))  # execute, another time tag
        replies = [(a.type_id, a.cot, a.negative) for a in c.asdus(quiet_s=1.0)]
        assert replies == [(58, 7, False), (58, 7, False), (58, 10, False)] and got["sw"] == 1.0
        c.send(command(63, 7000, struct.pack("<f", 3.0) + b"\0" + cp56(time.time())))
        c.send(command(107, 0, struct.pack("<H", 0x55AA) + cp56(time.time())))
        c.send(command(58, 6999, bytes([0x81]) + cp56(time.time())))
        replies = [(a.type_id, a.cot, a.negative) for a in c.asdus(quiet_s=1.0)]
        assert replies == [(63, 7, False), (107, 7, False), (58, 47, True)] and got["tap"] == 3.0
        # held up 2 minutes on the way (limit 30 s), or a tag marked invalid: not executed
        c.send(command(63, 7000, struct.pack("<f", 5.0) + b"\0" + cp56(time.time() - 120.0)))
        c.send(command(63, 7000, struct.pack("<f", 6.0) + b"\0" + cp56(time.time(), invalid=True)))
        replies = [(a.type_id, a.cot, a.negative) for a in c.asdus(quiet_s=1.0)]
        assert replies == [(63, 7, True), (63, 7, True)] and got["tap"] == 3.0 and plain.stale_refused == 2
        # the master sets the station clock an hour ahead: a command tagged with the wall clock
        # is now an hour old to the station
        c.send(command(103, 0, cp56(time.time() + 3600.0)))
        c.send(command(63, 7000, struct.pack("<f", 7.0) + b"\0" + cp56(time.time())))
        replies = [(a.type_id, a.cot, a.negative) for a in c.asdus(quiet_s=1.0)]
        assert replies == [(103, 7, False), (63, 7, True)] and got["tap"] == 3.0
        assert plain.clock_offset_s == pytest.approx(3600.0, abs=5.0)
    finally:
        c.close()
        plain.stop()
