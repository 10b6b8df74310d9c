"""Replay a recorded HIL run against the current controller code: the recorded telemetry is
served by ReplayLinks at the recorded cycle times, the controller's writes are collected and
compared with the recorded ones; the first divergence says when, which device and setpoint,
old value vs new."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from hil.recorder import ReplayLink, compare_writes, load_records, recorded_ticks, recorded_writes


class ReplayError(ValueError):
    """The run folder cannot be replayed (missing recording, no cycles)."""


def replay_run(run_dir: Path, scenario_path: str | None = None, settings: dict | None = None) -> dict:
    """Replay `run_dir`/links.jsonl; `settings` overrides controller CycleSettings (a 'new version')."""
    from hil.controller_adapter import HilController

    run_dir = Path(run_dir)
    rec_path = run_dir / "links.jsonl"
    if not rec_path.is_file():
        raise ReplayError(f"{run_dir}: no links.jsonl (was the run recorded? gridtwin hil scenario records by default)")
    records = load_records(rec_path)
    ticks = recorded_ticks(records)
    if not ticks:
        raise ReplayError(f"{rec_path}: no controller cycles recorded")
    if scenario_path:
        from scenarios.load import load_scenario

        scen = json.loads(load_scenario(scenario_path).model_dump_json())
    else:
        sj = run_dir / "scenario.json"
        if not sj.is_file():
            raise ReplayError(f"{run_dir}: no scenario.json; pass --scenario")
        scen = json.loads(sj.read_text())
    names = sorted({r["link"] for r in records if r.get("op") == "devices"})
    links: dict[str, ReplayLink] = {}

    def factory(endpoints, clock):
        for n in names:
            links[n] = ReplayLink(records, n, clock)
        return dict(links)

    from scenarios.model import Scenario

    start_epoch = Scenario.model_validate(scen).start.timestamp()
    with tempfile.TemporaryDirectory(prefix="gridtwin-replay-") as state:
        init = {"scenario": scen, "scenario_dir": "", "start_epoch": start_epoch, "mode": "lockstep",
                "endpoints": [], "record": None, "state_dir": state}
        hc = HilController(init, link_factory=factory, settings=settings)
        try:
            for t in ticks:
                if t < hc.clock.now():
                    continue  # a restarted run repeats no ticks, but be safe
                hc.cycle_at(t)
        finally:
            hc.close()
    new = [w for link in links.values() for w in link.writes]
    old = recorded_writes(records)
    return {"cycles": len(ticks), "old_writes": len(old), "new_writes": len(new),
            "divergences": compare_writes(old, new), "start_epoch": start_epoch}
