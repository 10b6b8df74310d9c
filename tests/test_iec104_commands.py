"""Command handling of the controller's IEC 104 link (Iec104Link over controller.links.
iec104_client) against a scripted raw-socket outstation written here (no IEC 104 library): every
command gets its confirmation and termination however the replies come (at once, termination
before confirmation, a stale reply to an earlier command first), a refusal of any cause is a
refusal, a select that is refused is never executed, every wait has a deadline, a link lost
mid-command fails the command at once. And against the emulators' outstation answering with no
processing delay (the replies c104's blocking client lost): every select-before-operate command
is confirmed."""

import socket
import struct
import threading
import time

import pytest
from polling import wait

from controller.clock import SteppedClock
from controller.links.iec104 import Iec104Link
from device_emulators.iec104 import (
    C_SC_NA_1,
    C_SE_NC_1,
    M_ME_NC_1,
    CommandPoint,
    MonitorPoint,
    Outstation,
)


class Scripted:
    """An outstation that answers each command ASDU with frames a test chooses: `script(asdu)`
    returns a list of (cot, negative, element or None for the command's own) to send back,
    or the string 'close'. Monitoring: one float at IOA 1001 in the interrogation."""

    def __init__(self, script):
        self.script, self.commands = script, []
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.ns = self.nr = 0
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _frame(self, conn, asdu: bytes):
        conn.sendall(bytes([0x68, len(asdu) + 4, (self.ns << 1) & 0xFF, self.ns >> 7,
                            (self.nr << 1) & 0xFF, self.nr >> 7]) + asdu)
        self.ns += 1

    def _run(self):
        conn, _ = self.srv.accept()
        with conn:
            buf = b""
            while True:
                try:
                    d = conn.recv(4096)
                except OSError:
                    return
                if not d:
                    return
                buf += d
                while len(buf) >= 2 and len(buf) >= 2 + buf[1]:
                    apdu, buf = buf[2:2 + buf[1]], buf[2 + buf[1]:]
                    if apdu[0] == 0x07:
                        conn.sendall(bytes([0x68, 4, 0x0B, 0, 0, 0]))
                    elif apdu[0] == 0x43:
                        conn.sendall(bytes([0x68, 4, 0x83, 0, 0, 0]))
                    elif apdu[0] & 1 == 0:
                        self.nr += 1
                        if self._asdu(conn, apdu[4:]) == "close":
                            return

    def _asdu(self, conn, a: bytes):
        if a[0] == 100:  # general interrogation: confirmation, one value, termination
            self._frame(conn, bytes([100, 1, 7, 0]) + a[4:])
            self._frame(conn, bytes([M_ME_NC_1, 1, 20, 0, 1, 0]) + struct.pack("<I", 1001)[:3]
                        + struct.pack("<f", 1.02) + b"\0")
            self._frame(conn, bytes([100, 1, 10, 0]) + a[4:])
            return None
        self.commands.append(a)
        replies = self.script(a)
        if replies == "close":
            return "close"
        for cot, neg, el in replies:
            self._frame(conn, bytes([a[0], 1, cot | (0x40 if neg else 0), 0]) + a[4:9] + (a[9:] if el is None else el))
        return None

    def close(self):
        self.srv.close()


def link_to(peer, **row):
    return Iec104Link.from_endpoints([{"device_id": "rtu", "host": "127.0.0.1", "port": peer.port, **row}],
                                     SteppedClock(0), connect_timeout_s=20, command_timeout_ms=3000)


def is_select(a: bytes) -> bool:
    return bool(a[-1] & 0x80)


def test_replies_in_any_order_and_stale_replies_skipped():
    # select: CON at once; execute: a stale CON for another value, then TERM before CON
    def script(a):
        if is_select(a):
            return [(7, False, None)]
        if a[0] == C_SC_NA_1:
            return [(7, False, bytes([a[9] ^ 1])), (10, False, None), (7, False, None)]
        return [(7, False, None)]

    peer = Scripted(script)
    link = link_to(peer)
    try:
        assert link.read()["rtu"]["v_pu.1"].value == pytest.approx(1.02)
        assert link.write("rtu/switch2", "closed", 1) is True
        assert [(c[0], c[9]) for c in peer.commands] == [(C_SC_NA_1, 0x81), (C_SC_NA_1, 0x01)]
        assert link.write("rtu/trafo0", "tap_pos", 3) is True  # direct: no termination awaited
        assert link.rtus[0].client.unexpected >= 1  # the stale confirmation was seen and skipped
    finally:
        link.close()
        peer.close()


@pytest.mark.parametrize("refusal", [(7, True), (47, True), (44, True), (46, True), (47, False)])
def test_refused_select_is_never_executed(refusal):
    peer = Scripted(lambda a: [(refusal[0], refusal[1], None)])
    link = link_to(peer)
    try:
        assert link.write("rtu/switch0", "closed", 1) is False
        time.sleep(0.3)
        assert len(peer.commands) == 1 and is_select(peer.commands[0])  # no execute followed
        assert link.commands_failed == 1
    finally:
        link.close()
        peer.close()


def test_every_wait_has_a_deadline_and_a_lost_link_fails_at_once():
    # select confirmed, execute confirmed, the termination never comes
    peer = Scripted(lambda a: [(7, False, None)])
    link = link_to(peer)
    try:
        t0 = time.monotonic()
        assert link.write("rtu/switch0", "closed", 1) is False
        assert time.monotonic() - t0 >= 3.0  # it waited for the termination, then gave up
        assert link.write("rtu/cap1", "step", 1) is True  # the link is still usable
    finally:
        link.close()
        peer.close()
    silent = Scripted(lambda a: [])  # no answer at all: the select times out, then is broken
    link = link_to(silent)
    try:
        assert link.write("rtu/switch0", "closed", 1) is False
        assert wait(lambda: len(silent.commands) == 2)
        assert silent.commands[1][2] & 0x3F == 8 and is_select(silent.commands[1])  # deactivation
    finally:
        link.close()
        silent.close()
    gone = Scripted(lambda a: "close")  # the outstation drops the link on the command
    link = link_to(gone)
    try:
        t0 = time.monotonic()
        assert link.write("rtu/trafo0", "tap_pos", 1) is False
        assert time.monotonic() - t0 < 3.0  # not the command timeout (3 s): the loss woke it
        assert not link.read()["rtu"] or not link.status()["rtu"].available
    finally:
        link.close()
        gone.close()


def test_immediate_confirmations_are_never_lost():
    """The emulators' outstation with no processing delay: replies come back before a blocking
    client would start waiting. 40 select-before-operate commands and 40 setpoints, all confirmed."""
    state = {"sw": 0, "tap": 0}
    os_ = Outstation("127.0.0.1", 0, confirm_delay_s=0.0, cycle_s=3600)
    os_.points = {1001: MonitorPoint(1001, M_ME_NC_1, 1.0)}
    os_.commands = {6000: CommandPoint(6000, C_SC_NA_1, lambda v: state.__setitem__("sw", v) or True, sbo=True),
                    7000: CommandPoint(7000, C_SE_NC_1, lambda v: state.__setitem__("tap", v) or True)}
    os_.start()
    link = Iec104Link.from_endpoints([{"device_id": "rtu", "host": "127.0.0.1", "port": os_.port}],
                                     SteppedClock(0), connect_timeout_s=20, command_timeout_ms=10_000)
    try:
        for k in range(40):
            assert link.write("rtu/switch0", "closed", k % 2) is True and state["sw"] == k % 2
            assert link.write("rtu/trafo0", "tap_pos", k % 5) is True and state["tap"] == k % 5
        assert link.commands_ok == 80 and link.rtus[0].client.unexpected == 0
    finally:
        link.close()
        os_.stop()
