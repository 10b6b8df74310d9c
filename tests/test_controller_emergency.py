"""The emergency plan is what is sent: over the twin (hil/direct.py, real safety gate, 2 s
cycles so the gate's ramp limit bites), a shed writes exactly the plan's commands, the restore
follows the plan's stages (flex loads at once, batteries last, held at their shed value until
then) and every battery reaches its released value although the gate ramp-limits the step
(the cycle carries it on)."""

import numpy as np
import pytest
from lv_fleet import lv_scenario

from hil.direct import attach_controller
from twin.simulation import Twin

SHED_S, RESTORE_S, SPREAD_S = 20.0, 80.0, 600.0
END_S = RESTORE_S + SPREAD_S + 40.0


def scenario():
    return lv_scenario("2026-01-15T12:00:00Z", END_S, 1.0, 60.0, {"cycle_s": 2.0, "objective": "dr"})


@pytest.fixture(scope="module")
def run():
    tw = Twin(scenario())
    att = attach_controller(tw)
    c = att.controller
    seen = {}

    def hook(t):
        if t.t_s == SHED_S:
            seen["shed"] = c.set_emergency(True, reason="test")
            seen["view"] = dict(c.emergency)
        if t.t_s == RESTORE_S:
            c.set_emergency(False)
        if t.t_s in (RESTORE_S - 10, RESTORE_S + 20, END_S - 2):
            seen[t.t_s] = {g: {k: getattr(f, k).copy() for k in ("p_set_kw", "curtail_pct")
                               if hasattr(f, k)} for g, f in t.fleets.items()}

    tw.after_step.append(hook)
    tw.run()
    att.finish(tw)
    seen["t0"] = tw.scenario.start.timestamp()
    return tw, c, seen


def test_shed_sends_the_plan(run):
    _tw, c, seen = run
    plan = c.emergency_src.plan
    want = {(x.device_id, x.setpoint, x.value) for x in plan.commands}
    t0 = seen["t0"]
    sent = {(s["device_id"], s["setpoint"], s["value"]) for s in c.hist.query(
        "setpoints", since=t0 + SHED_S, until=t0 + RESTORE_S - 1, limit=100_000) if s["source"] == "emergency"}
    # every plan command reached its device (after ramp-limited steps) and nothing else was sent
    assert want and want <= sent and {x[:2] for x in sent} == {x[:2] for x in want}
    kinds = {x.device_id.split("/")[0] for x in plan.commands}
    assert {"home_batteries", "pumps"} <= kinds
    before = seen[RESTORE_S - 10]
    shed_bats = [int(x.device_id.split("/")[1]) for x in plan.commands if x.device_id.startswith("home_")]
    assert np.all(before["home_batteries"]["p_set_kw"][shed_bats] < -3.99)  # full discharge reached
    assert np.all(before["pumps"]["curtail_pct"] == 100.0)
    v = seen["view"]  # what /api/emergency and /api/fleet show
    assert v["plan"]["shed_kw"] > 0 and v["hold_s"] > 0 and v["response_s"] >= 1.0
    assert [s["delay_s"] for s in v["plan"]["restore"]] == sorted(s["delay_s"] for s in v["plan"]["restore"])


def test_restore_is_staged_and_reaches_the_released_values(run):
    _tw, c, seen = run
    mid, end = seen[RESTORE_S + 20], seen[END_S - 2]
    assert np.all(mid["pumps"]["curtail_pct"] == 0.0)  # flex loads first
    shed_bats = [int(x.device_id.split("/")[1]) for x in c.emergency_src.plan.commands
                 if x.device_id.startswith("home_")]
    assert np.all(mid["home_batteries"]["p_set_kw"][shed_bats] < -3.99)  # batteries last
    assert np.all(end["home_batteries"]["p_set_kw"] == 0.0)  # carried past the ramp limit
    ramped = [d for d in c.hist.query("decisions", since=seen["t0"] + RESTORE_S, limit=100_000)
              if d["source"] == "emergency" and "ramp_limit" in (d["reasons"] or "")
              and d["device_id"].startswith("home_batteries")]
    assert ramped, "the gate never ramp-limited the restore: the test does not test the carry"
    assert c.emergency is None and c.emergency_src.restoring is None
    assert c.hist.events_of("emergency_restored")
