"""`gridtwin run FILE`: one scenario, with the in-process controller when the scenario enables
it (hil wires controller and twin; the twin may not import either)."""

from __future__ import annotations

import os
from pathlib import Path

from scenarios.model import MAX_DEVICE_STEPS
from twin.cli import load_checked, report_outcome


def register(sub) -> None:
    p = sub.add_parser("run", help="run a scenario and write runs/<scenario>-<utc>/")
    p.add_argument("scenario")
    p.add_argument("--out", default="runs", help="results root folder (default: runs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar, only the result line")
    p.add_argument("--duration-s", type=float, help="override the scenario's duration (checked like the file's)")
    p.add_argument("--allow-long", action="store_true",
                   help=f"allow more than {MAX_DEVICE_STEPS:.0e} device steps")
    p.set_defaults(func=cmd_run)


def cmd_run(args) -> int:
    from grid_models.feeders import FeederError
    from scenarios.load import ScenarioError
    from twin.params import ParamError

    overrides, flags = {}, {}
    if args.duration_s is not None:
        overrides["duration_s"], flags["duration_s"] = args.duration_s, "--duration-s"
    scenario, _ = load_checked(args.scenario, overrides, flags, allow_long=args.allow_long)
    try:  # a results root that cannot take the run folder must fail now, not after the run
        Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ScenarioError(f"--out {args.out}: cannot create the results folder: {e.strerror or e}") from None
    if not os.access(args.out, os.W_OK | os.X_OK):
        raise ScenarioError(f"--out {args.out}: results folder is not writable")
    from hil.runner import run_scenario

    try:
        summary, out = run_scenario(scenario, out_root=args.out, quiet=args.quiet)
    except ScenarioError:
        raise
    except (FeederError, ParamError) as e:  # what preflight missed still names the file
        raise ScenarioError(f"{args.scenario}: {e}") from None
    return report_outcome(summary, out)
