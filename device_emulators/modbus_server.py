"""Modbus TCP servers (pymodbus SimDevice API) whose registers are live views of the twin.

Each request passes through the device's action hook: reads refresh the image from the
twin first, writes are validated and applied to twin setpoints (exception 03 when out of
the device's limits, 02 for read-only or unknown registers), and injected faults act here:
latency, dropped responses (the client times out), exception responses.
"""

from __future__ import annotations

import asyncio
import logging

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device_emulators.devices import EmulatedDevice, WriteRefused

log = logging.getLogger("device_emulators")
WRITE_CODES = {6, 16, 23}


def sim_device(dev: EmulatedDevice, lock) -> SimDevice:
    lo, _ = dev.image.address_range()

    async def action(function_code, start_address, address, count, current_registers, set_values):
        if dev.latency_s:
            await asyncio.sleep(dev.latency_s)
        if dev.drop:
            await asyncio.sleep(3600)  # never answers in time; the client's timeout fires
        if dev.exception_code:
            return ExcCodes(dev.exception_code)
        with lock:
            try:
                if set_values is not None and function_code in WRITE_CODES:
                    dev.apply_write(address, [int(v) for v in set_values])
                else:
                    dev.refresh(address, count)  # only the points this request covers
            except WriteRefused as e:
                log.info("%s: write %d+%d refused: %s", dev.device_id, address, len(set_values or []), e)
                return ExcCodes(e.code)
            i = address - start_address
            current_registers[i:i + count] = dev.image.regs[i:i + count]
        return None

    return SimDevice(id=dev.unit, simdata=[SimData(lo, values=list(dev.image.regs),
                                                   datatype=DataType.REGISTERS)], action=action)


class ModbusEndpoint:
    """One listening TCP port serving one device or a gateway of many unit ids."""

    def __init__(self, host: str, port: int, devices: list[EmulatedDevice], lock):
        self.host, self.port, self.devices, self.lock = host, port, devices, lock
        self.server: ModbusTcpServer | None = None

    async def start(self) -> None:
        sims = [sim_device(d, self.lock) for d in self.devices]
        self.server = ModbusTcpServer(sims if len(sims) > 1 else sims[0], address=(self.host, self.port))
        await self.server.serve_forever(background=True)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.shutdown()
            self.server = None

    async def reset(self) -> None:
        """Drop every open connection (the device rebooted) and listen again."""
        await self.stop()
        await asyncio.sleep(0.05)
        await self.start()
