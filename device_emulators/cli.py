"""`gridtwin emulate scenarios/X.yaml`: the twin on the wall clock with every device behind
its protocol on loopback; prints the endpoint table, runs until the duration or Ctrl-C."""

from __future__ import annotations

import time


def register(sub) -> None:
    p = sub.add_parser("emulate", help="run the twin in real time with all device emulators up")
    p.add_argument("scenario")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.0/8)")
    p.add_argument("--port-base", type=int, help="first port (default: free ports)")
    p.add_argument("--duration-s", type=float, help="stop after this much wall time")
    p.add_argument("--no-rtu", action="store_true", help="no IEC 104 feeder RTU")
    p.set_defaults(func=cmd_emulate)


def cmd_emulate(args) -> int:
    from rich.console import Console
    from rich.table import Table

    from device_emulators import EmulatorHost
    from gridtwin_cli import UserError
    from twin.cli import load_checked
    from twin.simulation import Twin

    s, _ = load_checked(args.scenario)  # everything `gridtwin validate` checks, one line on a mistake
    twin = Twin(s)
    try:
        host = EmulatorHost(twin, host=args.host, port_base=args.port_base, rtu=not args.no_rtu)
    except ValueError as e:
        raise UserError(str(e)) from None
    rows = host.start()
    table = Table(title=f"{s.name}: {len(rows)} endpoints (started in {host.start_s:.2f} s)")
    for col in ("device", "protocol", "host:port", "unit / CA", "map"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["device_id"], r["protocol"], f"{r['host']}:{r['port']}", str(r["unit"]), r["map"])
    console = Console()
    console.print(table)
    end = min(s.duration_s, args.duration_s or s.duration_s)
    t0 = time.monotonic()
    late = 0
    try:
        while (t := time.monotonic() - t0) < end:
            host.step(min(t, twin.end_s))
            nxt = (int(t / s.device_step_s) + 1) * s.device_step_s
            wait = nxt - (time.monotonic() - t0)
            if wait < 0:
                late += 1
            time.sleep(max(wait, 0.0))
    except KeyboardInterrupt:
        pass
    finally:
        host.stop()
    console.print(f"emulated {time.monotonic() - t0:.0f} s; {late} late steps")
    return 0
