"""Recorder/replay at the DeviceLink level: what a controller read and wrote comes back
identically from the recording, and changed decisions are pinpointed."""

from __future__ import annotations

import numpy as np
import pytest

from controller.clock import SteppedClock
from controller.links.direct import DirectLink
from hil.recorder import (
    RecordFile,
    RecordingLink,
    ReplayLink,
    compare_writes,
    load_records,
    recorded_writes,
)
from scenarios.load import load_scenario
from twin.simulation import Twin


class TwinPort:
    """Minimal DirectLink port over a Twin's fleets (the shape hil/direct.py provides)."""

    def __init__(self, twin):
        self.twin = twin

    def describe(self):
        return {n: {"kind": f.KIND, "bus": f.bus, "ratings": {}} for n, f in self.twin.fleets.items()}

    def read(self):
        return {n: f.telemetry() for n, f in self.twin.fleets.items()}

    def write(self, group, setpoint, index, value):
        self.twin.fleets[group].write(setpoint, index, value)

    def available(self):
        return {n: f.available for n, f in self.twin.fleets.items()}


def small_twin():
    s = load_scenario("scenarios/cigre_mv_day.yaml")
    s.start = s.start.replace(hour=11)
    s.duration_s = 600
    for g in s.fleet:
        g.count = 4
    return Twin(s)


def battery_rule(link, scale):
    """A stand-in decision rule: discharge each battery by scale * its PV neighbour's output."""
    data = link.read()
    pv = sum(v["p_kw"].value for d, v in data.items() if d.startswith("rooftop_pv/"))
    for i in range(4):
        link.write(f"home_batteries/{i}", "p_set_kw", float(np.clip(scale * pv / 4, -5, 5)))


def test_recording_replays_identical_telemetry_and_finds_divergence(tmp_path):
    tw = small_twin()
    start = tw.scenario.start.timestamp()
    clock = SteppedClock(start)
    rec = RecordFile(tmp_path / "links.jsonl")
    link = RecordingLink(DirectLink(TwinPort(tw), clock), rec, "direct", clock)
    link.devices()
    ticks, seen = [], []
    for k in range(1, 6):
        tw.run_until(60 * k)
        clock.advance_to(start + 60 * k)
        ticks.append(start + 60 * k)
        battery_rule(link, 0.1)
        seen.append({d: v["p_kw"].value for d, v in link.read().items()})
    rec.close()
    records = load_records(tmp_path / "links.jsonl")
    assert sum(r["op"] == "write" for r in records) == 20

    # same rule replayed: identical telemetry, no divergence
    rclock = SteppedClock(start)
    rl = ReplayLink(records, "direct", rclock)
    assert [d.device_id for d in rl.devices()] == [d.device_id for d in link.devices()]
    for k, t in enumerate(ticks):
        rclock.advance_to(t)
        battery_rule(rl, 0.1)
        got = {d: v["p_kw"].value for d, v in rl.read().items()}
        assert got == pytest.approx(seen[k])
    assert compare_writes(recorded_writes(records), rl.writes) == []

    # a "new version" with a different gain diverges at the first cycle with PV output
    rclock2 = SteppedClock(start)
    rl2 = ReplayLink(records, "direct", rclock2)
    for t in ticks:
        rclock2.advance_to(t)
        battery_rule(rl2, 0.05)
    div = compare_writes(recorded_writes(records), rl2.writes)
    assert div, "a changed decision rule must be detected"
    first = div[0]
    assert first.t == pytest.approx(ticks[0])
    assert first.device == "home_batteries/0" and first.setpoint == "p_set_kw"
    assert first.old != 0 and first.new == pytest.approx(first.old / 2)
    assert "home_batteries/0.p_set_kw" in first.describe(start)


def test_replay_link_without_recording_of_link_is_clear_error(tmp_path):
    with pytest.raises(ValueError, match="no device list for link 'modbus'"):
        ReplayLink([], "modbus", SteppedClock(0.0))
