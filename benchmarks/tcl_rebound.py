"""Rebound after a DR event with 1,000 air conditioners: the TCL group's power after the event
when held units go back all at once vs rebound-capped (controller/tcl_dispatch.py
`release_capped`), against the same population with no event (same seed, measured in the
same run). CIGRE MV, 4 batteries, 300 kW for 20 min, 35 min watched after the event.

    .venv/bin/python benchmarks/tcl_rebound.py
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hil.direct import attach_controller
from scenarios.model import Scenario
from twin.simulation import Twin

EVENT_START_S, EVENT_S = 45 * 60, 20 * 60


def scenario(event: bool) -> Scenario:
    d = {"name": "tcl_rebound", "start": "2026-07-15T12:30:00Z", "duration_s": 100 * 60,
         "device_step_s": 4, "power_flow_interval_s": 300, "seed": 5,
         "feeder": {"kind": "cigre_mv", "limits": {"v_min_pu": 0.9, "v_max_pu": 1.1}},
         "fleet": [{"name": "acs", "kind": "tcl", "count": 1000, "placement": {"rule": "load_buses"},
                    "params": {"r_c_per_kw": {"dist": "uniform", "low": 4.0, "high": 6.0},
                               "c_kwh_per_c": {"dist": "uniform", "low": 0.5, "high": 0.8},
                               "p_rated_kw": {"dist": "uniform", "low": 1.2, "high": 2.0}}},
                   {"name": "batteries", "kind": "battery", "count": 4,
                    "params": {"e_cap_kwh": 50, "p_max_kw": 25, "soc_init_pct": 60}}],
         "weather": {"kind": "synthetic", "latitude_deg": 35.0, "longitude_deg": 11.0,
                     "cloudiness": 0.1, "t_out_mean_c": 29, "t_out_swing_c": 5},
         "base_load": {"profile": "residential", "noise_pct": 0},
         "controller": {"enabled": True, "cycle_s": 60, "optimize_every_s": 86400, "safety_gate": False},
         "outputs": {"timeseries_every_s": 300, "report": False}}
    if event:
        d["dr_events"] = [{"id": "hot", "start": "2026-07-15T13:15:00Z", "duration_s": EVENT_S,
                           "reduction_kw": 300.0}]
    return Scenario.model_validate(d)


def run(event: bool, cap_frac: float | None = None):
    tw = Twin(scenario(event))
    att = attach_controller(tw)
    if cap_frac is not None:
        att.controller.tcl.models["acs"].cfg.rebound_cap_frac = cap_frac
    rows = []
    tw.after_step.append(lambda t: rows.append((t.t_s, float(t.fleets["acs"].p_kw.sum()))))
    tw.run()
    s = np.array(rows)
    post = s[:, 0] >= EVENT_START_S + EVENT_S
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
