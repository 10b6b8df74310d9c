"""`gridtwin run | validate | feeders | schema`: the twin's commands."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("run", help="run a scenario and write runs/<scenario>-<utc>/")
    p.add_argument("scenario")
    p.add_argument("--out", default="runs", help="results root folder (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only the result line")
    p.add_argument("--duration-s", type=float, help="override the scenario's duration")
    p.set_defaults(func=cmd_run)
    v = sub.add_parser("validate", help="check a scenario file, run nothing")
    v.add_argument("scenario", nargs="+")
    v.set_defaults(func=cmd_validate)
    f = sub.add_parser("feeders", help="list built-in feeders")
    f.set_defaults(func=cmd_feeders)
    s = sub.add_parser("schema", help="write the scenario JSON Schema")
    s.add_argument("--out", default="scenarios/schema.json")
    s.set_defaults(func=cmd_schema)


def cmd_validate(args) -> int:
    from scenarios.load import load_scenario

    for path in args.scenario:
        s = load_scenario(path)
        n = sum(g.count for g in s.fleet)
        print(f"{path}: ok ({s.name}: {s.feeder.kind}, {n} devices in {len(s.fleet)} groups, "
              f"{s.duration_s / 3600:g} h)")
    return 0


def cmd_feeders(args) -> int:
    from grid_models.feeders import BUILTIN_FEEDERS, SIMBENCH_EXAMPLES

    for k, d in BUILTIN_FEEDERS.items():
        print(f"{k:16s} {d}")
    print("SimBench examples: " + ", ".join(SIMBENCH_EXAMPLES))
    return 0


def cmd_schema(args) -> int:
    from scenarios.load import export_schema

    export_schema(args.out)
    print(f"wrote {args.out}")
    return 0


def cmd_run(args) -> int:
    from scenarios.load import load_scenario

    scenario = load_scenario(args.scenario)
    if args.duration_s:
        scenario.duration_s = args.duration_s
    from hil.runner import run_scenario  # the run may attach the controller (hil wires it)

    summary, out = run_scenario(scenario, out_root=args.out, quiet=args.quiet)
    return report_outcome(summary, out)


def report_outcome(summary: dict, out: Path) -> int:
    failed = [a for a in summary["assertions"] if not a["passed"]]
    v = summary["voltage"]
    print(f"{summary['scenario']}: {summary['duration_s'] / 3600:g} h simulated in "
          f"{summary['wall_s']:.1f} s (x{summary['speedup']}), v {v['min_pu']:.3f}..{v['max_pu']:.3f} pu, "
          f"violation minutes {summary['violations']['minutes']:g}; results in {out}")
    for a in failed:
        print(f"ASSERTION FAILED: {a['kpi']} {a['op']} {a['value']} (actual {a['actual']})",
              file=sys.stderr)
    return 1 if failed else 0


def progress_bar(quiet: bool, label: str):
    """A rich progress callback(done_s, total_s) and a closer; no-ops when quiet."""
    if quiet:
        return (lambda done, total: None), (lambda: None)
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.percentage:>5.1f}% sim"), TimeElapsedColumn(),
                    TimeRemainingColumn(), transient=False)
    prog.start()
    task = prog.add_task(label, total=1.0)

    def update(done, total):
        prog.update(task, completed=done / total if total else 1.0)

    return update, prog.stop


