"""VenBridge (controller/dr/ven_bridge.py) in process: the VEN's events become Controller DR
events; opt from the reduction margin less overlapping events; modification, cancel, opt
changes and unknown groups; after a restart a repeated VTN event matches the resumed one; an
unreachable VTN raises openadr_down and the cycle goes on. The controller runs on the twin
through DirectLink (hil/direct.py), one cycle a minute."""

from datetime import UTC, datetime, timedelta

import pytest
from openadr_vtn import wait_for
from ports import free_port

from controller.dr.ven_bridge import VenBridge
from controller.historian import Historian
from hil.direct import attach_controller
from scenarios.model import Scenario
from twin.simulation import Twin

START = datetime(2026, 6, 21, 17, tzinfo=UTC)


def twin() -> Twin:
    return Twin(Scenario.model_validate({
        "name": "bridge", "start": START.isoformat(), "duration_s": 3 * 3600, "seed": 1,
        "device_step_s": 60, "power_flow_interval_s": 300,
        "feeder": {"kind": "cigre_lv"},
        "fleet": [{"name": "bat", "kind": "battery", "count": 4,
                   "params": {"e_cap_kwh": 20, "p_max_kw": 10, "soc_init_pct": 70}}],
        "controller": {"enabled": True, "cycle_s": 60, "optimize_every_s": 3600, "objective": "dr",
                       "safety_gate": False},
        "outputs": {"report": False}}))


def event(eid, kw, start, minutes=30, mod=0, status="far", groups=None):
    ev = {"event_descriptor": {"event_id": eid, "modification_number": mod, "event_status": status},
          "active_period": {"dtstart": start, "duration": timedelta(minutes=minutes)},
          "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "delta", "intervals": [
              {"dtstart": start, "duration": timedelta(minutes=minutes), "signal_payload": -kw}]}]}
    if groups:
        ev["targets"] = [{"resource_id": g} for g in groups]
    return ev


@pytest.fixture
def world(tmp_path):
    tw = twin()
    hist = Historian(tmp_path / "h.sqlite", "NORMAL")
    ctl = attach_controller(tw, historian=hist).controller
    tw.run_until(180)  # a few cycles: the margin is known (4 x 10 kW batteries)
    bridge = VenBridge(ctl, "http://127.0.0.1:1/x")
    ven = bridge.make_ven()  # offline: handle_event only
    return tw, ctl, bridge, ven, tmp_path


def test_events_reach_the_controller_with_opt_from_the_margin(world):
    tw, ctl, bridge, ven, _ = world
    assert ctl.margin()["margin_kw"] == pytest.approx(40.0)
    t1 = START + timedelta(minutes=10)
    assert ven.handle_event(event("A", 25.0, t1)) == "optIn"
    # overlaps A: only 15 kW of margin left beside it
    assert ven.handle_event(event("B", 20.0, t1 + timedelta(minutes=5))) == "optOut"
    assert ven.handle_event(event("C", 20.0, t1 + timedelta(hours=1))) == "optIn"  # no overlap
    assert ven.handle_event(event("D", 5.0, t1, groups=["nope"])) == "optOut"
    a, b = ctl.dr["oadr:A"], ctl.dr["oadr:B"]
    assert (a.source, a.opt, a.reduction_kw, a.start_t) == ("openadr", "in", 25.0, t1.timestamp())
    assert (b.opt, ctl.dr["oadr:C"].opt) == ("out", "in")
    assert "oadr:D" not in ctl.dr  # unknown group: refused and alarmed, never dispatched
    assert any(al["kind"] == "openadr_event_refused" for al in ctl.hist.alarms(active_only=True))
    assert [d["room_kw"] for d in bridge.decisions[:2]] == [40.0, 15.0]
    # the VTN modifies A while it runs, then cancels C; both reach the controller
    tw.run_until(20 * 60)
    assert a.status == "active" and a.samples
    ven.handle_event(event("A", 30.0, t1, minutes=40, mod=1))
    assert (a.reduction_kw, a.duration_s, a.opt) == (30.0, 2400.0, "in")
    ven.handle_event(event("C", 20.0, t1 + timedelta(hours=1), status="cancelled", mod=1))
    assert ctl.dr["oadr:C"].status == "cancelled"
    tw.run_until(40 * 60)
    assert sum(a.samples[-10:]) / 10 == pytest.approx(30.0, rel=0.05)  # the modified request
    rows = {r["id"]: r for r in ctl.hist.dr_events()}
    assert rows["oadr:A"]["reduction_kw"] == 30.0 and rows["oadr:C"]["status"] == "cancelled"


def test_restart_matches_the_repeated_vtn_event(world):
    tw, _, _, ven, tmp_path = world
    t1 = START + timedelta(minutes=10)
    ven.handle_event(event("A", 25.0, t1))
    tw.run_until(15 * 60)  # A is active
    # a restarted service: the controller resumes A from the historian; the VEN sees it there
    tw2 = twin()
    ctl2 = attach_controller(tw2, historian=Historian(tmp_path / "h.sqlite", "NORMAL")).controller
    assert ctl2.dr["oadr:A"].status == "active"
    bridge2 = VenBridge(ctl2, "http://127.0.0.1:1/x")
    ven2 = bridge2.make_ven()
    # the VTN repeats it after the restart, before the first cycle (margin still 0): answer kept
    assert ctl2.margin()["margin_kw"] == 0.0
    assert ven2.handle_event(event("A", 25.0, t1)) == "optIn"
    assert not ctl2.hist.alarms(active_only=True) or all(
        al["kind"] != "openadr_event_refused" for al in ctl2.hist.alarms(active_only=True))
    assert ctl2.dr["oadr:A"].reduction_kw == 25.0 and ctl2.dr["oadr:A"].status == "active"
    # an event that ended before the restart, repeated by the VTN, is not dispatched again
    ven2.handle_event(event("OLD", 5.0, START - timedelta(hours=1)))
    assert "oadr:OLD" not in ctl2.dr


def test_unreachable_vtn_raises_an_alarm_and_the_cycle_goes_on(world):
    tw, ctl, _, _, _ = world
    port = free_port()  # nothing listens there
    bridge = VenBridge(ctl, f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b", retry_s=0.2,
                       start_timeout_s=1.0).start()
    try:
        assert wait_for(lambda: any(al["kind"] == "openadr_down" for al in ctl.hist.alarms(True)),
                        timeout_s=15)
        n = ctl.n_cycle
        tw.run_until(10 * 60)
        assert ctl.n_cycle >= n + 5 and not bridge.registered
        msg = next(al["message"] for al in ctl.hist.alarms(True) if al["kind"] == "openadr_down")
        assert f"127.0.0.1:{port}" in msg
    finally:
        bridge.stop(timeout_s=2)
