"""Real-time HIL: twin on the wall clock, controller process on its own clock, 20 s with a
handful of devices; jitter is reported and the controller really cycled."""

from __future__ import annotations

import pytest
from conftest import needs_emulators, small_dr_scenario

pytestmark = [needs_emulators, pytest.mark.timeout(120)]


def test_realtime_run_reports_jitter_and_keeps_up(run_hil_scenario):
    s = small_dr_scenario(count=3, duration_s=20.0)
    s.device_step_s = 1.0
    s.power_flow_interval_s = 5.0
    s.controller.cycle_s = 5.0
    summary, _ = run_hil_scenario(s, mode="realtime", record=False)
    h = summary["hil"]
    rt = h["realtime"]
    assert h["mode"] == "realtime" and rt["steps"] == 19  # step 0 is the untimed warm-up
    assert rt["lateness_p50_ms"] <= rt["lateness_p99_ms"] <= rt["lateness_max_ms"]
    assert rt["fell_behind"] is False and rt["overruns"] == 0
    assert summary["controller"]["cycles"] >= 3  # cycles at 5, 10, 15 (20) s of wall clock
    assert summary["controller"]["link_reads"] >= 3
