"""HIL pytest plugin: `run_hil_scenario` runs a scenario under HIL (twin + emulators in this
process, the controller in its own process, real protocols on loopback) into tmp_path, so
tests/hil/ cases are plain pytest tests asserting on the run's summary."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


# The emulators are part of the product: an import failure must fail these tests, not skip them.
needs_emulators = pytest.mark.usefixtures()


def small_dr_scenario(path: str = "scenarios/hil/hil_dr_delivery.yaml", count: int = 6,
                      duration_s: float = 900.0):
    """A fast variant of a HIL scenario: few devices, 15 min, the DR event early."""
    from datetime import timedelta

    from scenarios.load import load_scenario

    s = load_scenario(ROOT / path)
    s.duration_s = duration_s
    for g in s.fleet:
        g.count = min(g.count, count)
    if duration_s <= 300:  # too short for an event after the 180 s settling time
        s.dr_events = []
    for ev in s.dr_events:
        ev.start = s.start + timedelta(seconds=180)
        ev.duration_s = min(ev.duration_s, duration_s - 300)
        ev.reduction_kw = min(ev.reduction_kw, 2.0 * count)
    return s


@pytest.fixture
def run_hil_scenario(tmp_path):
    """run_hil_scenario(scenario_or_path, mode=None, **kw) -> (summary dict, results folder)."""
    from hil.coordinator import run_hil
    from scenarios.load import load_scenario

    def run(scenario, mode=None, **kw):
        if isinstance(scenario, (str, Path)):
            scenario = load_scenario(ROOT / scenario)
        return run_hil(scenario, tmp_path / "runs", mode=mode, **kw)

    return run
