"""`gridtwin dashboard --api URL [--token-file F] | --run runs/<dir> [--run runs/<dir2>]`."""

from __future__ import annotations

import os


def register(sub) -> None:
    p = sub.add_parser("dashboard", help="operator dashboard (Dash) for a controller API or finished runs")
    p.add_argument("--api", help="controller API base URL, e.g. http://127.0.0.1:8080")
    p.add_argument("--token-file", help="file holding the bearer token (or env GRIDTWIN_TOKEN)")
    p.add_argument("--run", action="append", default=[], help="run folder to open (twice to compare)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8050)
    p.add_argument("--refresh-ms", type=int, default=1000)
    p.set_defaults(func=cmd_dashboard)


def cmd_dashboard(args) -> int:
    from dashboard.app import create_app
    from dashboard.run_data import RunFolderError
    from gridtwin_cli import UserError

    token = os.environ.get("GRIDTWIN_TOKEN")
    if args.token_file:
        try:
            with open(args.token_file) as f:
                token = f.read().strip()
        except OSError as e:
            raise UserError(f"--token-file {args.token_file}: {e.strerror}") from None
    if not args.api and not args.run:
        raise UserError("dashboard: give --api URL and/or --run DIR")
    try:
        app = create_app(args.api, token, args.run, args.refresh_ms)
    except RunFolderError as e:
        raise UserError(str(e)) from None
    print(f"dashboard on http://{args.host}:{args.port}/")
    app.run(host=args.host, port=args.port, debug=False)
    return 0
