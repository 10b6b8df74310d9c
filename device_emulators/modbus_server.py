"""Modbus TCP servers whose registers are live views of the twin: our own MBAP framer and
function-code dispatcher on asyncio, answering as a SunSpec device does.

Written instead of pymodbus's server because a field client checks exactly what a generic
server decides for us (see README, "Modbus conformance"): every complete ADU in the TCP stream
is framed and answered in order; a bad MBAP header (protocol id != 0, length outside 2..254)
closes the connection; idle connections are closed after `idle_timeout_s`; only FC 03, 06, 16
and 0x2B/0x0E (device identification) are implemented, everything else gets exception 01;
counts outside the spec get 03; addresses outside the device's image 02; a unit id the port
does not serve gets 0x0B (gateway target failed to respond) and broadcast unit 0 no answer.
Register semantics live in `EmulatedDevice` (refresh on read, validated writes). Injected
faults act here: latency, dropped responses (the client times out), exception responses.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time

from device_emulators.devices import EmulatedDevice, WriteRefused

log = logging.getLogger("device_emulators")

ILLEGAL_FUNCTION, ILLEGAL_ADDRESS, ILLEGAL_VALUE, DEVICE_FAILURE, BUSY, GATEWAY_NO_RESPONSE = 1, 2, 3, 4, 6, 0x0B
READ_HOLDING, WRITE_SINGLE, WRITE_MULTIPLE, MEI = 0x03, 0x06, 0x10, 0x2B
MEI_DEVICE_ID = 0x0E
BASIC_OBJECTS = 3  # VendorName, ProductCode, MajorMinorRevision (mandatory)


def _exc(fc: int, code: int) -> bytes:
    return bytes([(fc | 0x80) & 0xFF, code])


def device_identification(dev: EmulatedDevice, pdu: bytes) -> bytes:
    """FC 0x2B / MEI 0x0E: basic and regular objects, stream (codes 1, 2) or one object (4)."""
    if len(pdu) != 4:
        return _exc(MEI, ILLEGAL_VALUE)
    code, first = pdu[2], pdu[3]
    objs = dev.identity_objects()
    if code not in (1, 2, 4):
        return _exc(MEI, ILLEGAL_VALUE)
    if code == 4:
        if first not in objs:
            return _exc(MEI, ILLEGAL_ADDRESS)
        ids = [first]
    else:
        top = BASIC_OBJECTS if code == 1 else 0x80
        ids = sorted(i for i in objs if i < top)
        if first not in ids:
            first = 0
        ids = [i for i in ids if i >= first]
    body = b"".join(bytes([i, len(objs[i])]) + objs[i] for i in ids)
    return bytes([MEI, MEI_DEVICE_ID, code, 0x82, 0, 0, len(ids)]) + body  # 0x82: regular, individual access


def handle_pdu(dev: EmulatedDevice, pdu: bytes, lock) -> bytes:
    """The response PDU for one request PDU (register semantics in EmulatedDevice)."""
    fc = pdu[0]
    if fc == READ_HOLDING:
        if len(pdu) != 5:
            return _exc(fc, ILLEGAL_VALUE)
        address, count = struct.unpack(">HH", pdu[1:5])
        if not 1 <= count <= 125:
            return _exc(fc, ILLEGAL_VALUE)
        lo, hi = dev.image.address_range()
        if address < lo or address + count > hi:
            return _exc(fc, ILLEGAL_ADDRESS)
        with lock:
            dev.refresh()
            regs = dev.image.regs[address - lo:address - lo + count]
        return bytes([fc, 2 * count]) + struct.pack(f">{count}H", *regs)
    if fc in (WRITE_SINGLE, WRITE_MULTIPLE):
        if fc == WRITE_SINGLE:
            if len(pdu) != 5:
                return _exc(fc, ILLEGAL_VALUE)
            address, value = struct.unpack(">HH", pdu[1:5])
            values, echo = [value], pdu
        else:
            if len(pdu) < 6:
                return _exc(fc, ILLEGAL_VALUE)
            address, count, nbytes = struct.unpack(">HHB", pdu[1:6])
            if not 1 <= count <= 123 or nbytes != 2 * count or len(pdu) != 6 + nbytes:
                return _exc(fc, ILLEGAL_VALUE)
            values, echo = list(struct.unpack(f">{count}H", pdu[6:])), pdu[:5]
        with lock:
            try:
                dev.apply_write(address, values)
            except WriteRefused as e:
                log.info("%s: write %d+%d refused: %s", dev.device_id, address, len(values), e)
                return _exc(fc, e.code)
        return echo
    if fc == MEI and len(pdu) >= 2 and pdu[1] == MEI_DEVICE_ID:
        return device_identification(dev, pdu)
    return _exc(fc, ILLEGAL_FUNCTION)


class ModbusEndpoint:
    """One listening TCP port serving one device or a gateway of many unit ids."""

    def __init__(self, host: str, port: int, devices: list[EmulatedDevice], lock, idle_timeout_s: float = 60.0,
                 max_connections: int = 0, min_request_interval_s: float = 0.0):
        self.host, self.port, self.devices, self.lock = host, port, devices, lock
        # field behaviour (scenario fleet[].emulation): some inverters accept one connection,
        # and answer "busy" (exception 06) to requests faster than they can process
        self.max_connections, self.min_interval_s = max_connections, min_request_interval_s
        self._last_request: dict[int, float] = {}
        self.by_unit = {d.unit: d for d in devices}
        self.idle_timeout_s = idle_timeout_s
        self.server: asyncio.AbstractServer | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.requests = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port)

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            for w in list(self.writers):
                w.close()
            self.writers.clear()
            await self.server.wait_closed()
            self.server = None

    async def reset(self) -> None:
        """Drop every open connection (the device rebooted) and listen again."""
        await self.stop()
        await asyncio.sleep(0.05)
        await self.start()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.max_connections and len(self.writers) >= self.max_connections:
            writer.close()  # no free connection slot: closed at once, as such devices do
            return
        self.writers.add(writer)
        try:
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(7), self.idle_timeout_s)
                except asyncio.TimeoutError:
                    return  # idle: a device frees the connection slot
                tid, proto, length, unit = struct.unpack(">HHHB", head)
                if proto != 0 or not 2 <= length <= 254:
                    log.info("%s:%d: bad MBAP header %s, closing", self.host, self.port, head.hex())
                    return
                pdu = await asyncio.wait_for(reader.readexactly(length - 1), self.idle_timeout_s)
                self.requests += 1
                reply = await self._answer(unit, pdu)
                if reply is not None:
                    writer.write(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)
                    await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError):
            return
        finally:
            self.writers.discard(writer)
            writer.close()

    async def _answer(self, unit: int, pdu: bytes) -> bytes | None:
        dev = self.by_unit.get(unit)
        if dev is None:
            return None if unit == 0 else _exc(pdu[0], GATEWAY_NO_RESPONSE)  # broadcast: no answer
        if dev.latency_s:
            await asyncio.sleep(dev.latency_s)
        if dev.drop:
            return None  # never answered; the client's timeout fires
        if dev.exception_code:
            return _exc(pdu[0], dev.exception_code)
        if self.min_interval_s:
            now, last = time.monotonic(), self._last_request.get(unit, -1e9)
            self._last_request[unit] = now
            if now - last < self.min_interval_s:
                return _exc(pdu[0], BUSY)
        return handle_pdu(dev, pdu, self.lock)
