"""Runs one scenario end to end: build the twin, attach the controller when the scenario
asks for one, run with a progress bar, write results."""

from __future__ import annotations

import time
from pathlib import Path


def run_scenario(scenario, out_root: str | Path = "runs", quiet: bool = False):
    """Run `scenario`; return (summary dict, results folder)."""
    from twin.cli import progress_bar
    from twin.results import run_dir, write_results
    from twin.simulation import Twin

    twin = Twin(scenario)
    attached = []
    if scenario.controller.enabled:
        from hil.direct import attach_controller  # in-process controller over DirectLink

        attached.append(attach_controller(twin))
    if getattr(scenario, "regulation", None) is not None:
        from hil.tcl_tracking import attach_tcl_tracking  # TCL regulation experiment

        attached.append(attach_tcl_tracking(twin))
    update, close = progress_bar(quiet, scenario.name)
    t0 = time.perf_counter()
    try:
        twin.run(progress=update)
    finally:
        close()
    wall = time.perf_counter() - t0
    for a in attached:
        a.finish(twin)
    out = run_dir(out_root, scenario.name)
    summary = write_results(twin, out, wall)
    return summary, out
