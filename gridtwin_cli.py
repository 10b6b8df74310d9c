"""The `gridtwin` command line. Each subcommand lives beside the code it drives and is
registered here by module name, so parts of the product can add commands independently."""

from __future__ import annotations

import argparse
import importlib
import sys

# (subcommand, module that defines `register(subparsers)`); modules missing from an
# install are skipped so a partial checkout still runs.
COMMANDS = [
    ("hil.run_cli", "run"),
    ("twin.cli", "validate / feeders / schema"),
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


class _Help(argparse.HelpFormatter):
    """Shows each option's default where its help text does not already say it."""

    def _get_help_string(self, action):
        h = action.help or ""
        if (action.default not in (None, False, [], argparse.SUPPRESS) and "default" not in h
                and action.option_strings and action.nargs != 0):
            h += " (default: %(default)s)"
        return h


class _Parser(argparse.ArgumentParser):
    def __init__(self, *a, **kw):
        kw.setdefault("formatter_class", _Help)
        super().__init__(*a, **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gridtwin", description="VPP digital twin and HIL testbed",
                     epilog="gridtwin COMMAND --help shows each command's options.")
    parser.add_argument("--version", action="version", version=f"gridtwin {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    argv = sys.argv[1:] if argv is None else argv
    if not argv:  # no command: the overview, not an error
        parser.print_help()
        return 0
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
