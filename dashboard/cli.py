"""`gridtwin dashboard --api URL | --run runs/<dir> [--run runs/<dir2>] | --sweep sweeps/<dir>`."""

from __future__ import annotations

import logging


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="operator dashboard (Dash) for a controller API or finished runs",
                       description="Live view of a controller API (users sign in with their API token) "
                                   "and/or a viewer that compares finished runs.")
    p.add_argument("--api", metavar="URL", help="controller API base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--run", metavar="DIR", action="append", default=[],
                   help="run folder to open (give it twice or more to compare)")
    p.add_argument("--sweep", metavar="DIR", action="append", default=[],
                   help="sweep folder (sweeps/<name>-<utc>/) to browse: results table and KPI vs parameter")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    p.add_argument("--port", type=int, default=8050, help="port to listen on (default: %(default)s)")
    p.add_argument("--refresh-ms", type=int, default=1000, help="live view refresh period (default: %(default)s)")
    p.add_argument("--session-hours", type=float, default=8.0,
                   help="sign-in lifetime before users must sign in again (default: %(default)s)")
    p.add_argument("-v", "--verbose", action="store_true", help="print an access-log line per HTTP request")
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args) -> int:
    from dashboard.app import create_app
    from dashboard.run_data import RunFolderError
    from gridtwin_cli import UserError

    if not args.api and not args.run and not args.sweep:
        raise UserError("dashboard: give --api URL, --run DIR and/or --sweep DIR")
    try:
        app = create_app(args.api, args.run, args.refresh_ms, session_ttl_s=3600.0 * args.session_hours,
                         sweep_dirs=args.sweep)
    except RunFolderError as e:
        raise UserError(str(e)) from None
    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)
    what = ", ".join(filter(None, [f"live view of {args.api} (sign in at /login)" if args.api else "",
                                   f"{len(args.run)} run(s)" if args.run else "",
                                   f"{len(args.sweep)} sweep(s)" if args.sweep else ""]))
    print(f"dashboard on http://{args.host}:{args.port}/ · {what} · access log {'on' if args.verbose else 'off (-v)'}")
    app.run(host=args.host, port=args.port, debug=False)
    return 0
