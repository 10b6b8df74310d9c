"""`gridtwin sweep FILE [--workers N] [--scheduler tcp://HOST:PORT] [--resume DIR]`."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("sweep", help="run a sweep file (parameters x seeds) on Dask; "
                                     "one row per sample in sweeps/<name>-<utc>/results.parquet")
    p.add_argument("sweep", nargs="?", help="sweep file (YAML), see scenarios/sweeps/")
    p.add_argument("--workers", type=int, help="LocalCluster worker processes (default: cores)")
    p.add_argument("--scheduler", help="an existing Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--resume", metavar="DIR", help="continue the sweep in DIR: skip samples it has")
    p.add_argument("--out", default="sweeps", help="results root (default: sweeps)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--check", action="store_true", help="validate and expand the sweep, run nothing")
    p.add_argument("--schema", metavar="OUT", help="write the sweep file's JSON Schema to OUT and exit")
    p.set_defaults(func=cmd_sweep)


def cmd_sweep(args) -> int:
    from hil.sweep.spec import load_sweep

    if args.schema:
        from hil.sweep.spec import export_schema

        export_schema(args.schema)
        print(f"wrote {args.schema}")
        return 0
    from hil.sweep.spec import SweepError

    if not args.sweep:
        raise SweepError("sweep: give a sweep file (see scenarios/sweeps/)")
    if args.workers is not None and args.scheduler:
        raise SweepError("--workers and --scheduler exclude each other (the cluster has its workers)")
    sweep = load_sweep(args.sweep)
    if args.check:
        print(f"{args.sweep}: ok ({sweep.spec.name}: {len(sweep.samples)} samples, design "
              f"{sweep.spec.design}, {sweep.spec.seeds} seeds per point, kpis {', '.join(sweep.spec.kpis)})")
        return 0
    import signal

    from hil.sweep.engine import run_sweep

    def _term(signum, frame):  # SIGTERM (a batch system's stop) ends like Ctrl-C: whole table kept
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _term)
    from hil.sweep.report import describe, first_exceedance

    df, _ = run_sweep(sweep, root=args.out, workers=args.workers, scheduler=args.scheduler,
                        resume=args.resume, quiet=args.quiet)
    for kpi, v in first_exceedance(sweep, df).items():
        print(describe(kpi, v))
    return 1 if (df["status"] != "ok").any() else 0
