"""A Modbus/TCP client by hand (MBAP header + PDU over a socket): the independent client the
emulator tests use, so pymodbus is never on both ends."""

import socket
import struct


class Raw:
    """Modbus/TCP by hand: MBAP header + PDU."""

    def __init__(self, port, timeout_s=20.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
        self.tid = 0

    def adu(self, pdu: bytes, unit: int = 1) -> bytes:
        self.tid += 1
        return struct.pack(">HHHB", self.tid, 0, len(pdu) + 1, unit) + pdu

    def recv(self, timeout_s=20.0):
        """(tid, unit, pdu) or None on timeout; raises ConnectionResetError when closed."""
        self.s.settimeout(timeout_s)
        try:
            head = self._exact(7)
        except socket.timeout:
            return None
        tid, _, length, unit = struct.unpack(">HHHB", head)
        return tid, unit, self._exact(length - 1)

    def _exact(self, n):
        b = b""
        while len(b) < n:
            c = self.s.recv(n - len(b))
            if not c:
                raise ConnectionResetError("closed")
            b += c
        return b

    def ask(self, pdu: bytes, unit: int = 1) -> bytes | None:
        self.s.sendall(self.adu(pdu, unit))
        r = self.recv()
        return None if r is None else r[2]

    def close(self):
        self.s.close()


def read(addr, count):
    return struct.pack(">BHH", 3, addr, count)


def write_multi(addr, values):
    return struct.pack(f">BHHB{len(values)}H", 16, addr, len(values), 2 * len(values), *values)


def regs(c: Raw, addr: int, count: int) -> list[int]:
    """Holding registers addr..addr+count-1 (FC 03); asserts a normal reply."""
    r = c.ask(read(addr, count))
    assert r is not None and r[0] == 3, r
    return list(struct.unpack(f">{count}H", r[2:]))


def write(c: Raw, addr: int, values: list[int]) -> None:
    """FC 16; asserts the device accepted it."""
    r = c.ask(write_multi(addr, values))
    assert r is not None and r[0] == 16, r
