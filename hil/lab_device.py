"""A stand-in for a physical device on a lab bench: a one-group twin with its emulated
Modbus/SunSpec server bound to the given loopback address, stepping in real time.

    python -m hil.lab_device scenarios/X.yaml --group lab_pv --host 127.0.0.2 --port 1502

Prints one line `READY host port` when the server accepts connections, then runs until its
scenario ends or it is terminated. The HIL twin sees it through `endpoint: {host, port, ...}`.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="hil.lab_device")
    ap.add_argument("scenario")
    ap.add_argument("--group", required=True, help="the fleet group this device is")
    ap.add_argument("--host", default="127.0.0.2")
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args(argv)
    if not args.host.startswith("127."):
        print(f"hil.lab_device: --host must be a loopback address, got {args.host!r}", file=sys.stderr)
        return 2
    from device_emulators import EmulatorHost
    from hil.realtime import run_twin_realtime, warm_up
    from scenarios.load import load_scenario
    from twin.simulation import Twin

    s = load_scenario(args.scenario)
    s.fleet = [g for g in s.fleet if g.name == args.group]
    if not s.fleet:
        print(f"hil.lab_device: {args.scenario}: no fleet group {args.group!r}", file=sys.stderr)
        return 2
    g = s.fleet[0]
    g.endpoint, g.link, g.gateway = "emulated", "modbus", False
    s.faults, s.dr_events = [], []
    s.controller.enabled = False
    twin = Twin(s)
    host = EmulatorHost(twin, host=args.host, port_base=args.port, rtu=False)
    host.start()
    wall0 = warm_up(twin)
    print(f"READY {args.host} {args.port}", flush=True)
    try:
        run_twin_realtime(twin, wall0, lock=getattr(host, "lock", None))
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()
    time.sleep(0.1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
