"""Rebound after a DR event with 1,000 air conditioners: the TCL group's power after the event
when held units go back all at once vs rebound-capped (controller/tcl_dispatch.py
`release_capped`), against the same population with no event (same seed, measured in the
same run). scenarios/tcl_dr_hot_afternoon.yaml (CIGRE MV, 4 batteries, 300 kW for 20 min),
watched 35 min after the event.

    .venv/bin/python benchmarks/tcl_rebound.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil.direct import attach_controller
from scenarios.load import load_scenario
from scenarios.model import Scenario
from twin.simulation import Twin

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = load_scenario(ROOT / "scenarios/tcl_dr_hot_afternoon.yaml")
EVENT = SCENARIO.dr_events[0]
EVENT_END_S = (EVENT.start - SCENARIO.start).total_seconds() + EVENT.duration_s


def scenario(event: bool) -> Scenario:
    """The shipped hot afternoon watched 35 min past the event, with or without it."""
    return SCENARIO.model_copy(update={"duration_s": EVENT_END_S + 35 * 60,
                                       "dr_events": SCENARIO.dr_events if event else []}, deep=True)


def run(event: bool, cap_frac: float | None = None):
    tw = Twin(scenario(event))
    att = attach_controller(tw)
    if cap_frac is not None:
        att.controller.tcl.models["acs"].cfg.rebound_cap_frac = cap_frac
    rows = []
    tw.after_step.append(lambda t: rows.append((t.t_s, float(t.fleets["acs"].p_kw.sum()))))
    tw.run()
    s = np.array(rows)
    post = s[:, 0] >= EVENT_END_S
    dr = att.controller.dr_summary().get("hot", {})
    return s[post, 1], float(tw.fleets["acs"].comfort_dm.sum()), dr.get("delivery_pct")


def main() -> int:
    print(f"cores: {os.cpu_count()}, 1,000 ACs, 300 kW DR for 20 min, 35 min watched after it")
    ref, _, _ = run(False)
    print(f"{'release after the event':28s} {'peak kW':>8s} {'mean kW':>8s} {'excess kWh':>10s} "
          f"{'comfort deg-min':>15s} {'DR %':>6s}")
    print(f"{'no event (baseline run)':28s} {ref.max():8.0f} {ref.mean():8.0f} {0.0:10.1f} {'':>15s} {'':>6s}")
    for name, cap in (("all at once", 100.0), ("rebound-capped (+10 %)", None)):
        p, dm, pct = run(True, cap)
        excess = float((p - ref).sum()) * 4.0 / 3600.0
        print(f"{name:28s} {p.max():8.0f} {p.mean():8.0f} {excess:10.1f} {dm:15.2f} {pct:6.1f}"
              f"   peak {p.max() / ref.max():.2f}x the no-event peak")
    return 0


if __name__ == "__main__":
    sys.exit(main())
