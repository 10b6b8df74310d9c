"""The `gridtwin` command line. Each subcommand lives beside the code it drives and is
registered here by module name, so parts of the product can add commands independently."""

from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module that defines `register(subparsers)`); modules missing from an
# install are skipped so a partial checkout still runs.
COMMANDS = [
    ("twin.cli", "run / validate / feeders / schema"),
    ("device_emulators.cli", "emulate"),
    ("controller.cli", "controller"),
    ("controller.ledger_cli", "ledger"),
    ("hil.cli", "hil"),
    ("dashboard.cli", "dashboard"),
    ("hil.sweep.cli", "sweep"),
]


class UserError(Exception):
    """A mistake the user can fix: printed as one line, exit code 2."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gridtwin")
    except PackageNotFoundError:
        return "0+unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gridtwin", description="VPP digital twin and HIL testbed")
    parser.add_argument("--version", action="version", version=f"gridtwin {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module, _ in COMMANDS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name and module.startswith(e.name):
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from grid_models.feeders import FeederError
    from scenarios.load import ScenarioError
    from twin.fleet import ParamError

    try:
        rc = args.func(args)
    except (UserError, ScenarioError, FeederError, ParamError) as e:
        print(f"gridtwin: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("gridtwin: interrupted", file=sys.stderr)
        return 130
    return int(rc or 0)


if __name__ == "__main__":  # `python -m gridtwin_cli`: run the importable module's copy, so
    import gridtwin_cli  # UserError raised by subcommands is the class main() catches

    sys.exit(gridtwin_cli.main())
