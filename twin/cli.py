"""`gridtwin validate | feeders | schema`, and the helpers `gridtwin run` shares (checked loading,
end-of-run lines, progress bar); `run` itself lives in hil.run_cli, since a run may attach the
controller, which only hil may wire to the twin."""

from __future__ import annotations

import sys
from pathlib import Path

from scenarios.model import MAX_DEVICE_STEPS
from twin.report import h_mm


def register(sub) -> None:
    v = sub.add_parser("validate", help="check scenario files as a run would (feeder, fleet, CSV inputs), "
                                        "run nothing")
    v.add_argument("scenario", nargs="+")
    v.add_argument("--allow-long", action="store_true",
                   help=f"allow more than {MAX_DEVICE_STEPS:.0e} device steps")
    v.set_defaults(func=cmd_validate)
    f = sub.add_parser("feeders", help="list built-in feeders")
    f.set_defaults(func=cmd_feeders)
    s = sub.add_parser("schema", help="write the scenario JSON Schema")
    s.add_argument("--out", default=str(Path(__file__).resolve().parent.parent / "scenarios" / "schema.json"),
                   help="where to write it (default: the package's scenarios/schema.json, from any folder)")
    s.set_defaults(func=cmd_schema)


def plural(n: int, word: str, many: str | None = None) -> str:
    """'1 device', '2 devices', '1,000 devices'."""
    return f"{n:,} {word if n == 1 else many or word + 's'}"


def load_checked(path: str, overrides: dict | None = None, flags: dict | None = None, allow_long: bool = False):
    """Load a scenario and find everything a run of it would fail on (ScenarioError, one line)."""
    from scenarios.load import load_scenario
    from twin.preflight import check_scenario

    s = load_scenario(path, overrides, allow_long=allow_long, override_flags=flags)
    return s, check_scenario(s, str(path))


def cmd_validate(args) -> int:
    from scenarios.load import ScenarioError

    failed = 0
    for path in args.scenario:
        try:
            s, c = load_checked(path, allow_long=args.allow_long)
        except ScenarioError as e:
            if len(args.scenario) == 1:
                raise
            print(f"gridtwin: error: {e}", file=sys.stderr)
            failed += 1
            continue
        feeder = s.feeder.code if s.feeder.kind == "simbench" else s.feeder.kind
        print(f"{path}: ok ({s.name}: {feeder}, {plural(c.n_buses, 'bus', 'buses')}, "
              f"{plural(c.n_devices, 'device')} in {plural(c.n_groups, 'group')}, {h_mm(s.duration_s)})")
    return 2 if failed else 0


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


def report_outcome(summary: dict, out: Path) -> int:
    from twin.report import end_of_run_lines

    failed = [a for a in summary["assertions"] if not a["passed"]]
    print("\n".join(end_of_run_lines(summary, out)))
    for a in failed:
        print(f"ASSERTION FAILED: {a['kpi']} {a['op']} {a['value']} (actual {a['actual']})",
              file=sys.stderr)
    pf = summary.get("power_flow") or {}
    if pf.get("failed_intervals"):  # issue 18: a run with unsolved intervals is not a success
        print(f"POWER FLOW FAILED: {pf['failed_intervals']} of {pf['runs']} intervals did not converge "
              f"(events.jsonl power_flow_failed); energies omit {pf['unsolved_h']:g} h", file=sys.stderr)
    return 1 if failed or pf.get("failed_intervals") else 0


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


