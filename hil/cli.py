"""`gridtwin hil run | scenario | replay | gateway`: regression suites, single HIL runs, replays,
and the lab-side secure command gateway."""

from __future__ import annotations

import sys
from pathlib import Path


def register(sub) -> None:
    p = sub.add_parser("hil", help="hardware-in-the-loop: suites, lockstep/real-time runs, replay")
    hs = p.add_subparsers(dest="hil_command", required=True)
    r = hs.add_parser("run", help="run a regression suite (suites/<name>.yaml)")
    r.add_argument("suite", help="suite YAML file, e.g. suites/regression.yaml")
    r.add_argument("--junit", help="write JUnit XML here")
    r.add_argument("--short", action="store_true", help="CI version: shorter runs, fewer devices")
    r.add_argument("--out", default="runs/hil", help="results root (default: runs/hil)")
    r.add_argument("--only", action="append", help="run only this case (repeatable)")
    r.add_argument("--keep-recordings", choices=["failed", "all"], default="failed",
                   help="keep links.jsonl (for gridtwin hil replay) of failed cases only, or of all (default: %(default)s)")
    r.add_argument("--quiet", action="store_true", help="no progress bar or per-case lines")
    r.set_defaults(func=cmd_run)
    s = hs.add_parser("scenario", help="run one scenario under HIL (controller in its own process)")
    s.add_argument("scenario")
    s.add_argument("--realtime", action="store_true", help="twin on the wall clock (default: lockstep)")
    s.add_argument("--speed", type=float, default=1.0, help="real-time mode: x real time (default 1)")
    s.add_argument("--duration-s", type=float, help="override the scenario's duration")
    s.add_argument("--out", default="runs", help="results root (default: runs)")
    s.add_argument("--no-record", action="store_true", help="do not write links.jsonl")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(func=cmd_scenario)
    rp = hs.add_parser("replay", help="replay a recorded run's telemetry into the current controller")
    rp.add_argument("run_dir", help="a HIL results folder holding links.jsonl and summary.json")
    rp.add_argument("--scenario", help="scenario file for the new controller (default: the recorded one)")
    rp.add_argument("--max", type=int, default=20, help="divergences to list (default 20)")
    rp.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                    help="override a controller setting (e.g. dr_gain=0.3): a changed version")
    rp.set_defaults(func=cmd_replay)
    ini = hs.add_parser("init", help="write a controller config + 0600 tokens file for `gridtwin emulate FILE`",
                        description="Writes OUT/controller.yaml (every emulated device's port, unit and bus, "
                                    "the RTU, the feeder model, historian and API) and OUT/tokens.yaml (mode 0600: "
                                    "an operator and a viewer token) for the devices `gridtwin emulate FILE "
                                    "--port-base P` serves.")
    ini.add_argument("scenario", help="the scenario file the emulator runs")
    ini.add_argument("--port-base", type=int, required=True, help="the emulator's --port-base")
    ini.add_argument("--out", default="live", help="folder for controller.yaml and tokens.yaml (default: %(default)s)")
    ini.add_argument("--api-port", type=int, default=8080, help="controller API port (default: %(default)s)")
    ini.add_argument("--force", action="store_true", help="overwrite existing files")
    ini.set_defaults(func=cmd_init)
    gw = hs.add_parser("gateway", help="lab-side secure command gateway in front of real devices "
                       "(signed/encrypted envelopes; options: gridtwin hil gateway -- --help)")
    gw.add_argument("gateway_args", nargs="*", help="hil.command_gateway options (--listen, --device, --key, --trust, ...)")
    gw.set_defaults(func=cmd_gateway)


def cmd_init(args) -> int:
    from gridtwin_cli import UserError
    from hil.live_setup import write_live_config

    if not 1024 <= args.port_base <= 65000:
        raise UserError(f"--port-base must be within 1024..65000, got {args.port_base}")
    try:
        cfg, tok, tokens = write_live_config(args.scenario, args.port_base, args.out, args.api_port,
                                             force=args.force)
    except FileExistsError as e:
        raise UserError(str(e)) from None
    print(f"wrote {cfg} and {tok} (mode 0600)")
    print(f"  1. gridtwin emulate {args.scenario} --port-base {args.port_base}")
    print(f"  2. gridtwin controller serve --config {cfg}")
    print(f"  3. gridtwin dashboard --api http://127.0.0.1:{args.api_port}")
    print("  sign in as " + " or ".join(f"{u!r} with token {t}" for u, t in tokens.items()))
    return 0


def cmd_gateway(args) -> int:
    from hil.command_gateway import main

    return main(args.gateway_args)


def cmd_run(args) -> int:
    from gridtwin_cli import UserError
    from hil.suite import SuiteError, junit_xml, print_table, recording, run_suite, totals_line
    from twin.cli import progress_bar

    bar = {"close": lambda: None}

    def on_case(i, n, name, r):
        if args.quiet:
            return
        if r is None:
            print(f"[{i}/{n}] {name} ...", flush=True)
            bar["update"], bar["close"] = progress_bar(False, f"  {name}")
            return
        bar["close"]()
        verdict = "PASS" if r.passed else "FAIL"
        n_ok = sum(a["passed"] for a in r.assertions)
        print(f"[{i}/{n}] {name}: {verdict} ({n_ok}/{len(r.assertions)} assertions, {r.wall_s:.1f} s)"
              + (f" -> {r.out}" if r.out else ""), flush=True)

    def progress(done, total):
        if "update" in bar:
            bar["update"](done, total)

    try:
        suite, results = run_suite(args.suite, args.out, short=args.short, only=args.only,
                                   progress=None if args.quiet else progress, on_case=on_case,
                                   keep_recordings=args.keep_recordings)
    except SuiteError as e:
        raise UserError(str(e)) from None
    finally:
        bar["close"]()
    if args.junit:
        Path(args.junit).parent.mkdir(parents=True, exist_ok=True)
        Path(args.junit).write_text(junit_xml(suite, results))
    print_table(suite, results)
    failed = [r for r in results if not r.passed]
    for r in failed:
        why = (r.error or "").strip().splitlines()[0] if r.error else "; ".join(
            f"{a['kpi']} {a['op']} {a['value']} (actual {a['actual']})" for a in r.assertions if not a["passed"])
        rec = recording(r)
        print(f"FAILED {r.name}: {why}" + (f" ({r.out})" if r.out else "")
              + (f"; replay: gridtwin hil replay {r.out}" if rec else ""), file=sys.stderr)
    print(totals_line(suite, results, args.out, args.junit))
    return 1 if failed else 0


def cmd_scenario(args) -> int:
    from gridtwin_cli import UserError
    from hil.coordinator import run_hil
    from hil.session import HilError
    from twin.cli import load_checked, progress_bar, report_outcome

    over = {} if args.duration_s is None else {"duration_s": args.duration_s}  # checked by the model
    s, _ = load_checked(args.scenario, over, {"duration_s": "--duration-s"})
    if args.speed <= 0:
        raise UserError(f"--speed must be > 0, got {args.speed:g}")
    update, close = progress_bar(args.quiet, f"{s.name} (hil)")
    try:
        summary, out = run_hil(s, args.out, progress=update, mode="realtime" if args.realtime else None,
                               record=not args.no_record, speed=args.speed)
    except HilError as e:
        raise UserError(str(e).splitlines()[0]) from None
    finally:
        close()
    h = summary.get("hil", {})
    if h.get("mode") == "lockstep":
        print(f"lockstep: {h['cycles']} controller cycles, x{h['sim_s_per_wall_s']} sim s per wall s, "
              f"protocol share {h['protocol_share']:.1%}")
    elif h.get("realtime"):
        rt = h["realtime"]
        print(f"real time: lateness p50 {rt.get('lateness_p50_ms')} ms, p99 {rt.get('lateness_p99_ms')} ms, "
              f"max {rt.get('lateness_max_ms')} ms, overruns {rt.get('overruns')}, "
              f"fell behind: {rt.get('fell_behind')}")
    return report_outcome(summary, out)


def cmd_replay(args) -> int:
    from gridtwin_cli import UserError
    from hil.replay import ReplayError, replay_run

    settings = {}
    for kv in args.set:
        k, sep, v = kv.partition("=")
        if not sep:
            raise UserError(f"--set expects NAME=VALUE, got {kv!r}")
        settings[k] = float(v)
    try:
        rep = replay_run(Path(args.run_dir), scenario_path=args.scenario, settings=settings)
    except ReplayError as e:
        raise UserError(str(e)) from None
    print(f"replayed {rep['cycles']} cycles: {rep['old_writes']} recorded writes, "
          f"{rep['new_writes']} replayed writes, {len(rep['divergences'])} divergences")
    for d in rep["divergences"][: args.max]:
        print("  " + d.describe(rep["start_epoch"]))
    if rep["divergences"]:
        d = rep["divergences"][0]
        print(f"first divergence at +{d.t - rep['start_epoch']:g} s: {d.device} {d.setpoint}")
        return 1
    return 0
