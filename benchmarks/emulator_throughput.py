"""Emulator throughput: Modbus requests/s and p50/p99 latency with N devices polled
concurrently (one client thread per device, each reading a 50-register SunSpec block),
against bare pymodbus servers with a static datastore measured in the same run. While the
emulators are polled the twin steps on the wall clock (one device step per second, as
`gridtwin emulate` runs it), so every read sees the current step's values.

Bare and emulator rounds alternate (`--rounds`, default 3) and the ratio is of the medians, so
load from other work on a shared machine does not bias whichever server runs second.

Run: .venv/bin/python benchmarks/emulator_throughput.py [--devices 20] [--seconds 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pymodbus.client import ModbusTcpClient
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from device_emulators import EmulatorHost
from device_emulators.host import reserve_port
from scenarios.model import Scenario
from twin.simulation import Twin


def poll(targets, seconds: float) -> tuple[float, np.ndarray]:
    lat: list[float] = []
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(host, port, unit, addr):
        c = ModbusTcpClient(host, port=port, timeout=2)
        c.connect()
        mine = []
        while time.perf_counter() < stop:
            t = time.perf_counter()
            r = c.read_holding_registers(addr, count=50, device_id=unit)
            if not r.isError():
                mine.append(time.perf_counter() - t)
        c.close()
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=t) for t in targets]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return len(lat) / (time.perf_counter() - t0), np.array(lat) * 1e3


def bare_servers(n: int):
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    socks = [reserve_port("127.0.0.1") for _ in range(n)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    servers = []

    async def start():
        for p in ports:
            dev = SimDevice(id=1, simdata=[SimData(40000, values=list(range(120)), datatype=DataType.REGISTERS)])
            srv = ModbusTcpServer(dev, address=("127.0.0.1", p))
            await srv.serve_forever(background=True)
            servers.append(srv)

    asyncio.run_coroutine_threadsafe(start(), loop).result(60)
    return [("127.0.0.1", p, 1, 40000) for p in ports]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--devices", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=5.0, help="per round and server")
    ap.add_argument("--rounds", type=int, default=3, help="alternating bare/emulator rounds")
    a = ap.parse_args()
    s = Scenario.model_validate(dict(name="bench", start="2026-06-21T11:00:00Z", duration_s=3600,
                                     feeder={"kind": "cigre_lv"},
                                     fleet=[{"name": "pv", "kind": "pv", "count": a.devices}],
                                     outputs={"report": False}))
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False, meter=False)
    eps = host.start()
    host.step(60)
    inv = host.devices["pv/0"].image.by_name["103.W"].address - 14  # start of model 103's block
    emu = [(e["host"], e["port"], e["unit"], inv) for e in eps]
    bare = bare_servers(a.devices)

    def poll_emulator():
        """Poll the emulators while a thread steps the twin on the wall clock (live values)."""
        stepping = threading.Event()

        def step_on_wall_clock():
            t0, t_twin = time.monotonic(), twin.t_s
            while not stepping.wait(1.0):
                host.step(t_twin + round(time.monotonic() - t0))

        stepper = threading.Thread(target=step_on_wall_clock, daemon=True)
        stepper.start()
        try:
            return poll(emu, a.seconds)
        finally:
            stepping.set()
            stepper.join()

    # alternate bare and emulator rounds: load from other work on a shared machine drifts, and
    # interleaving spreads it over both sides instead of biasing whichever ran second
    t_before = twin.t_s
    rounds_b, rounds_e = [], []
    for _ in range(a.rounds):
        rounds_b.append(poll(bare, a.seconds))
        rounds_e.append(poll_emulator())
    host.stop()
    rb, re_ = float(np.median([r for r, _ in rounds_b])), float(np.median([r for r, _ in rounds_e]))
    lb, le = np.concatenate([lat for _, lat in rounds_b]), np.concatenate([lat for _, lat in rounds_e])
    print(f"twin stepped {twin.t_s - t_before:.0f} s while polled")
    print(f"cores: {os.cpu_count()}, {a.devices} devices polled concurrently, {a.rounds} alternating rounds "
          f"of {a.seconds:g} s per server, 50-register reads, one client thread per device")
    print("rounds req/s (bare / emulator): " + ", ".join(f"{b:.0f}/{e:.0f}" for (b, _), (e, _) in
                                                         zip(rounds_b, rounds_e, strict=True)))
    print(f"{'server':<28}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}   (median of rounds)")
    print(f"{'bare pymodbus (static)':<28}{rb:>9.0f}{np.percentile(lb, 50):>9.2f}{np.percentile(lb, 99):>9.2f}")
    print(f"{'gridtwin emulator (live)':<28}{re_:>9.0f}{np.percentile(le, 50):>9.2f}{np.percentile(le, 99):>9.2f}")
    print(f"throughput ratio emulator/bare: {re_ / rb:.2f}")


if __name__ == "__main__":
    main()
