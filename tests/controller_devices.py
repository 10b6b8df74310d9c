"""SunSpec battery devices for the controller's protocol tests: a real pymodbus TCP server per
device on 127.0.0.1 (each on its own event-loop thread, so one can hang without stalling the
others), register images laid out from pysunspec2's model definitions (1, 103, 124, 713),
and a tiny battery physics step that reads the control registers the controller wrote.

Stand-in until device_emulators lands its SunSpec servers; the faults it offers are the
ones the controller must survive: 'hang' (accepts, never answers: timeout) and 'refuse'.
"""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from controller.links import sunspec as ss
from ports import free_port

BASE = 40000
MODELS = (1, 103, 124, 713)


def _image(models) -> tuple[list[int], dict[int, int]]:
    regs = list(ss.SUNS)
    where = {}
    for mid in models:
        lay = ss.layout(mid)
        n = max(p.offset + p.size for p in lay.values())
        block = []
        for p in sorted(lay.values(), key=lambda p: p.offset):
            block += ss.unimplemented(p)
        block = block[:n]
        block[0], block[1] = mid, n - 2
        where[mid] = BASE + len(regs)
        regs += block
    regs += [ss.END_ID, 0]
    return regs, where


class Registers:
    """The device's register image; the server's action hook mirrors it on every request and
    can make the device hang (never answer in time) or refuse (exception 4)."""

    def __init__(self, values: list[int]):
        self.values = list(values)
        self.hang = False
        self.refuse = False

    async def action(self, function_code, start_address, address, count, current_registers,
                     set_values):
        if self.hang:
            await asyncio.sleep(1.0)
        if self.refuse:
            from pymodbus.constants import ExcCodes
            return ExcCodes.DEVICE_FAILURE
        if set_values is not None:
            a = address - BASE
            self.values[a:a + len(set_values)] = [int(v) for v in set_values]
        lo = start_address - BASE
        n = len(current_registers)
        current_registers[:] = self.values[lo:lo + n]
        return None


class SunSpecBattery:
    def __init__(self, p_max_kw=10.0, e_cap_kwh=20.0, soc_pct=50.0, min_rsv_pct=10.0):
        self.p_max_kw, self.e_cap_kwh = p_max_kw, e_cap_kwh
        self.soc_kwh = soc_pct / 100 * e_cap_kwh
        self.soc_min_kwh = min_rsv_pct / 100 * e_cap_kwh
        self.p_kw = 0.0
        self.tripped = False
        regs, self.where = _image(MODELS)
        self.block = Registers(regs)
        self._set(124, "WChaMax_SF", 0)
        self._set(124, "WChaMax", int(p_max_kw * 1000))
        self._set(124, "InOutWRte_SF", -1)
        self._set(124, "ChaState_SF", -1)
        self._set(124, "MinRsvPct_SF", 0)
        self._set(124, "MinRsvPct", int(min_rsv_pct))
        self._set(124, "StorCtl_Mod", 0)
        self._set(124, "InWRte", 0)
        self._set(124, "OutWRte", 0)
        self._set(713, "WH_SF", 0)
        self._set(713, "WHRtg", int(e_cap_kwh * 1000))
        self._set(103, "W_SF", 0)
        self._publish()

    def _addr(self, mid, name):
        return self.where[mid] + ss.layout(mid)[name].offset

    def _set(self, mid, name, value):
        p = ss.layout(mid)[name]
        self.block.values[self._addr(mid, name) - BASE:self._addr(mid, name) - BASE + p.size] = \
            ss.encode(value, p)

    def _get(self, mid, name):
        p = ss.layout(mid)[name]
        a = self._addr(mid, name) - BASE
        return ss.decode(self.block.values[a:a + p.size], ss.Point(p.name, 0, p.type, p.size, None))

    def _publish(self):
        self._set(103, "W", int(round(-self.p_kw * 1000)))
        self._set(124, "ChaState", int(round(1000 * self.soc_kwh / self.e_cap_kwh)))

    def setpoint_kw(self) -> float:
        mode = self._get(124, "StorCtl_Mod") or 0
        sf = 10.0 ** self._get(124, "InOutWRte_SF")
        if mode == 1:
            return self.p_max_kw * self._get(124, "InWRte") * sf / 100
        if mode == 2:
            return -self.p_max_kw * self._get(124, "OutWRte") * sf / 100
        return 0.0

    def step(self, dt_s: float) -> None:
        p = 0.0 if self.tripped else float(np.clip(self.setpoint_kw(), -self.p_max_kw, self.p_max_kw))
        dt_h = dt_s / 3600
        if p < 0:
            p = max(p, -(self.soc_kwh - self.soc_min_kwh) / dt_h)
        self.soc_kwh += p * dt_h
        self.p_kw = p
        self._publish()


class DeviceServers:
    """One Modbus TCP server per device, each on its own loop thread, on 127.0.0.1."""

    def __init__(self, devices: list[SunSpecBattery], ports: list[int] | None = None):
        self.devices = devices
        self.ports = list(ports) if ports is not None else [free_port() for _ in devices]
        self._threads, self._loops, self._servers = [], [], []
        for dev, port in zip(devices, self.ports):
            ready = threading.Event()
            th = threading.Thread(target=self._serve, args=(dev, port, ready), daemon=True)
            th.start()
            if not ready.wait(10):
                raise RuntimeError(f"device server on port {port} did not start")
            self._threads.append(th)

    def _serve(self, dev, port, ready):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        sim = SimDevice(1, [SimData(BASE, values=list(dev.block.values), datatype=DataType.REGISTERS)],
                        action=dev.block.action)

        async def main():
            server = ModbusTcpServer(sim, address=("127.0.0.1", port))
            self._loops.append(loop)
            self._servers.append(server)
            task = asyncio.create_task(server.serve_forever())
            for _ in range(200):
                await asyncio.sleep(0.01)
                if server.transport is not None:
                    break
            ready.set()
            await task

        try:
            loop.run_until_complete(main())
        except Exception:
            pass

    def rows(self, group: str = "bat") -> list[dict]:
        return [{"device_id": f"{group}/{i}", "group": group, "kind": "battery",
                 "host": "127.0.0.1", "port": p, "unit": 1} for i, p in enumerate(self.ports)]

    def close(self):
        for dev in self.devices:
            dev.block.hang = False
        for loop, server in zip(self._loops, self._servers):
            fut = asyncio.run_coroutine_threadsafe(server.shutdown(), loop)
            try:
                fut.result(5)
            except Exception:
                pass
        for th in self._threads:
            th.join(5)
