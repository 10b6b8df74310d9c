"""A raw-socket IEC 60870-5-104 client for conformance tests: our own APCI/ASDU encoding, so
the RTU is checked by a peer that shares no code with it (and not by c104 on both ends)."""

from __future__ import annotations

import socket
import struct
import time
from dataclasses import dataclass

SIZES = {1: 1, 13: 5, 45: 1, 46: 1, 50: 5, 58: 8, 63: 12, 100: 1, 101: 1, 103: 7, 107: 9}  # element octets


@dataclass
class Asdu:
    type_id: int
    cot: int
    negative: bool
    ca: int
    objects: list  # [(ioa, element bytes)]

    @property
    def ioas(self) -> list[int]:
        return [i for i, _ in self.objects]


def parse_asdu(b: bytes) -> Asdu:
    t, vsq, cot, ca = b[0], b[1], b[2], b[4] | b[5] << 8
    size = SIZES[t]
    objs, pos = [], 6
    for _ in range(vsq & 0x7F):
        objs.append((b[pos] | b[pos + 1] << 8 | b[pos + 2] << 16, b[pos + 3:pos + 3 + size]))
        pos += 3 + size
    return Asdu(t, cot & 0x3F, bool(cot & 0x40), ca, objs)


def command(type_id: int, ioa: int, element: bytes, cot: int = 6, ca: int = 1) -> bytes:
    return bytes([type_id, 1, cot, 0]) + struct.pack("<H", ca) + struct.pack("<I", ioa)[:3] + element


def single(ioa: int, on: bool, select: bool = False, cot: int = 6, ca: int = 1) -> bytes:
    return command(45, ioa, bytes([(0x80 if select else 0) | int(on)]), cot, ca)


def setpoint(ioa: int, value: float, cot: int = 6, ca: int = 1) -> bytes:
    return command(50, ioa, struct.pack("<f", value) + b"\0", cot, ca)


def interrogation(ca: int = 1) -> bytes:
    return command(100, 0, bytes([20]), 6, ca)


class Raw104:
    def __init__(self, port: int, host: str = "127.0.0.1", timeout_s: float = 10.0, ssl_context=None):
        self.sock = socket.create_connection((host, port), timeout=timeout_s)
        if ssl_context is not None:  # IEC 104 over TLS: Python's ssl, no code shared with the RTU
            self.sock = ssl_context.wrap_socket(self.sock, server_hostname=host)
        self.ns = self.nr = 0
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def u(self, code: int) -> None:
        self.raw(bytes([0x68, 4, code, 0, 0, 0]))

    def startdt(self) -> None:
        self.u(0x07)
        kind, code = self.recv(10.0)
        assert (kind, code) == ("U", 0x0B), (kind, code)

    def send(self, asdu: bytes) -> None:
        self.raw(bytes([0x68, len(asdu) + 4, (self.ns << 1) & 0xFF, self.ns >> 7,
                        (self.nr << 1) & 0xFF, self.nr >> 7]) + asdu)
        self.ns += 1

    def _read(self, n: int, deadline: float) -> bytes | None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(4096)
            except socket.timeout:
                return None
            if not chunk:
                raise ConnectionResetError("closed by the RTU")
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv(self, timeout_s: float):
        """('I', Asdu) | ('S', nr) | ('U', code) | (None, None) on timeout; I frames are acked."""
        deadline = time.monotonic() + timeout_s
        head = self._read(2, deadline)
        if head is None:
            return None, None
        assert head[0] == 0x68
        body = self._read(head[1], time.monotonic() + 10.0)
        if body[0] & 1 == 0:
            self.nr += 1
            self.raw(bytes([0x68, 4, 1, 0, (self.nr << 1) & 0xFF, self.nr >> 7]))
            return "I", parse_asdu(body[4:])
        if body[0] & 3 == 1:
            return "S", None
        return "U", body[0]

    def asdus(self, quiet_s: float = 1.0, first_s: float = 10.0, max_s: float = 20.0) -> list[Asdu]:
        """ASDUs until none arrived for quiet_s (the first may take up to first_s), at most max_s."""
        out, wait = [], first_s
        end = time.monotonic() + max_s
        while time.monotonic() < end:
            kind, a = self.recv(wait)
            if kind is None:
                return out
            if kind == "I":
                out.append(a)
                wait = quiet_s
        return out

    def closed_within(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                self.recv(deadline - time.monotonic())
        except (ConnectionResetError, BrokenPipeError):
            return True
        return False
