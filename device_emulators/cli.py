"""`gridtwin emulate scenarios/X.yaml`: the twin on the wall clock with every device behind
its protocol on loopback; prints the endpoint table, runs until the duration or Ctrl-C, and
writes the run's events.jsonl. With `--control-port P` faults can be injected and cleared
while it runs: `gridtwin emulate fault inject|clear|list [KIND TARGET [VALUE]] --control HOST:P`."""

from __future__ import annotations

import json
import time


def register(sub) -> None:
    p = sub.add_parser("emulate", help="run the twin in real time with all device emulators up")
    p.add_argument("scenario", help="scenario YAML, or 'fault' to talk to a running emulator's control port")
    p.add_argument("fault_args", nargs="*", help="with 'fault': inject KIND TARGET [VALUE] | clear KIND TARGET | list")
    p.add_argument("--control-port", type=int, help="open the fault control port (loopback) on this port (0: free)")
    p.add_argument("--control", help="with 'fault': HOST:PORT of a running emulator's control port")
    p.add_argument("--out", default="runs", help="folder for the run's events.jsonl (default runs/)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.0/8)")
    p.add_argument("--port-base", type=int, help="first port (default: free ports)")
    p.add_argument("--duration-s", type=float, help="stop after this much wall time")
    p.add_argument("--no-rtu", action="store_true", help="no IEC 104 feeder RTU")
    p.add_argument("--rtu-tls-cert", metavar="PEM", help="RTU over TLS (IEC 62351-3): its certificate")
    p.add_argument("--rtu-tls-key", metavar="PEM", help="... its private key (mode 0600)")
    p.add_argument("--rtu-tls-ca", metavar="PEM", help="... the CA client certificates must chain to")
    p.set_defaults(func=cmd_emulate)


def cmd_fault(args) -> int:
    """`gridtwin emulate fault ...`: one request to a running emulator; prints its reply."""
    from device_emulators.control import request
    from gridtwin_cli import UserError

    a = args.fault_args
    if not args.control:
        raise UserError("emulate fault: --control HOST:PORT is required")
    if not a or a[0] not in ("inject", "clear", "list") or (a[0] != "list" and len(a) < 3):
        raise UserError("emulate fault: expected 'inject KIND TARGET [VALUE]', 'clear KIND TARGET' or 'list'")
    req: dict = {"op": a[0]}
    if a[0] != "list":
        req.update(kind=a[1], target=a[2])
        if a[0] == "inject" and len(a) > 3:
            try:
                req["value"] = float(a[3])
            except ValueError:
                raise UserError(f"emulate fault: VALUE {a[3]!r} is not a number") from None
    try:
        reply = request(args.control, req)
    except (OSError, ValueError) as e:
        raise UserError(f"emulate fault: control port {args.control}: {e}") from None
    print(json.dumps(reply))
    if not reply.get("ok"):
        raise UserError(f"emulate fault: {reply.get('error')}")
    return 0


def _rtu_tls(args, UserError):
    """The RTU's TLS context from --rtu-tls-cert/key/ca (all three or none), else None."""
    files = (args.rtu_tls_cert, args.rtu_tls_key, args.rtu_tls_ca)
    if not any(files):
        return None
    if not all(files):
        raise UserError("--rtu-tls-cert, --rtu-tls-key and --rtu-tls-ca go together")
    from device_emulators.iec104 import TlsFileError, server_tls_context

    try:
        return server_tls_context(*files)
    except TlsFileError as e:
        raise UserError(str(e)) from None


def cmd_emulate(args) -> int:
    if args.scenario == "fault":
        return cmd_fault(args)
    from rich.console import Console
    from rich.table import Table

    from device_emulators import EmulatorHost
    from gridtwin_cli import UserError
    from twin.cli import load_checked
    from twin.simulation import Twin

    s, _ = load_checked(args.scenario)  # everything `gridtwin validate` checks, one line on a mistake
    rtu_tls = _rtu_tls(args, UserError)
    twin = Twin(s)
    try:
        host = EmulatorHost(twin, host=args.host, port_base=args.port_base, rtu=not args.no_rtu,
                            rtu_ssl_context=rtu_tls)
    except ValueError as e:
        raise UserError(str(e)) from None
    rows = host.start()
    from twin.results import run_dir

    events_path = run_dir(args.out, s.name) / "events.jsonl"
    control = None
    if args.control_port is not None:
        try:
            control = host.start_control(args.control_port, events_path)
        except OSError as e:
            host.stop()
            raise UserError(f"--control-port {args.control_port}: {e.strerror}") from None
    table = Table(title=f"{s.name}: {len(rows)} endpoints (started in {host.start_s:.2f} s)")
    for col in ("device", "protocol", "host:port", "unit / CA", "map"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["device_id"], r["protocol"], f"{r['host']}:{r['port']}", str(r["unit"]), r["map"])
    console = Console()
    console.print(table)
    if control is not None:
        console.print(f"fault control on {args.host}:{control} "
                      f"(gridtwin emulate fault list --control {args.host}:{control})")
    console.print(f"events: {events_path}", highlight=False)
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
        twin.events.write(events_path)
    console.print(f"emulated {time.monotonic() - t0:.0f} s; {late} late steps")
    return 0
