"""OpenADR 2.0b on loopback: a real openleadr VTN sends an event to the controller's VEN; the
event becomes the controller's own DR event (one model: controller/sources/dr.py), the cycle
dispatches it to the batteries, and the opt answer reaches the VTN. Offline: interval and
level translation, cancel, modification through the DR method set, opt-out beyond headroom."""

from datetime import UTC, datetime, timedelta

import pytest
from dr_world import dr_controller, run_until
from openadr_vtn import VEN_ID, Vtn, wait_for
from ports import free_port

from controller.dr.openadr_ven import OpenAdrVen, VenError


@pytest.fixture
def vtn():
    v = Vtn()
    yield v
    v.stop()


def test_vtn_event_reaches_dispatch_and_opt_in_is_reported(vtn):
    now = datetime.now(UTC).replace(microsecond=0)
    ctl, port, clock = dr_controller(now.timestamp())
    ven = OpenAdrVen(ctl, vtn.url, headroom_kw=lambda: ctl.margin()["margin_kw"],
                     telemetry_kw=lambda: 12.5, report_sampling_s=1.0)
    ven.start(timeout_s=10)
    try:
        assert ven.registered and ven.ven_id == VEN_ID
        start = now + timedelta(minutes=5)
        vtn.add_event("EV1", -40.0, start, targets=[{"resource_id": "home_batteries"}])
        ven.poll_now()
        assert wait_for(lambda: vtn.opts), "VTN never got the opt response"
        assert vtn.opts == [(VEN_ID, "EV1", "optIn")]
        ev = ctl.dr["oadr:EV1"]
        assert (ev.source, ev.opt, ev.reduction_kw, ev.groups) == ("openadr", "in", 40.0, ["home_batteries"])
        assert ev.start_t == start.timestamp() and ev.end_t - ev.start_t == 1800
        assert ctl.hist.dr_events()[0]["id"] == "oadr:EV1"  # persisted by the DR program
        # inside the window the cycle discharges the batteries by the requested 40 kW
        run_until(ctl, clock, start.timestamp() + 600)
        assert ev.status == "active" and -port.p_kw.sum() == pytest.approx(40.0, rel=0.05)
        assert wait_for(lambda: vtn.reports, timeout_s=5.0), "no report arrived"
        assert vtn.reports[0][1] == 12.5
    finally:
        ven.stop()
    assert not ven.errors


def test_event_beyond_headroom_is_opted_out(vtn):
    ctl, _, _ = dr_controller(datetime.now(UTC).timestamp())
    ven = OpenAdrVen(ctl, vtn.url, headroom_kw=lambda: 25.0).start(timeout_s=10)
    try:
        vtn.add_event("BIG", -40.0, datetime.now(UTC) + timedelta(minutes=1))
        ven.poll_now()
        assert wait_for(lambda: vtn.opts)
        assert vtn.opts == [(VEN_ID, "BIG", "optOut")]
        assert ctl.dr["oadr:BIG"].opt == "out"
    finally:
        ven.stop()


def test_unreachable_vtn_is_one_clear_error():
    port = free_port()  # nothing listens there
    ven = OpenAdrVen(dr_controller()[0], f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b")
    with pytest.raises(VenError, match=f"127.0.0.1:{port}"):
        ven.start(timeout_s=5)


def test_translate_levels_and_capacity_without_network():
    start = datetime(2026, 7, 1, 17, tzinfo=UTC)
    ctl, _, _ = dr_controller(start.timestamp() - 3600)
    ven = OpenAdrVen(ctl, "http://127.0.0.1:1/x", contracted_kw=90.0)
    ev = {"event_descriptor": {"event_id": "L", "modification_number": 0, "event_status": "far"},
          "active_period": {"dtstart": start, "duration": timedelta(hours=2)},
          "event_signals": [{"signal_name": "SIMPLE", "signal_type": "level", "intervals": [
              {"uid": 0, "dtstart": start, "duration": timedelta(hours=1), "signal_payload": 1},
              {"uid": 1, "dtstart": start + timedelta(hours=1), "duration": timedelta(hours=1),
               "signal_payload": 3}]}],
          "targets": [{"ven_id": "v"}]}
    specs = ven.translate(ev)
    assert [(s["id"], s["reduction_kw"], s["groups"]) for s in specs] == [
        ("oadr:L:0", 30.0, None), ("oadr:L:1", 90.0, None)]
    assert specs[1]["start_t"] - specs[0]["start_t"] == 3600
    assert ven.handle_event(ev) == "optIn"
    assert sorted(ctl.dr) == ["oadr:L:0", "oadr:L:1"]
    # a cancel from the VTN cancels both intervals, in the controller and its historian
    ev["event_descriptor"]["event_status"] = "cancelled"
    ven.handle_event(ev)
    assert {e.status for e in ctl.dr.values()} == {"cancelled"}
    assert {r["status"] for r in ctl.hist.dr_events()} == {"cancelled"}


def test_modification_goes_through_the_dr_methods_and_keeps_the_opt():
    start = datetime(2026, 7, 1, 17, tzinfo=UTC)
    ctl, _, _ = dr_controller(start.timestamp() - 3600)
    ven = OpenAdrVen(ctl, "http://127.0.0.1:1/x", headroom_kw=lambda: 60.0)

    def event(mod, kw, minutes=60):
        return {"event_descriptor": {"event_id": "M", "modification_number": mod, "event_status": "far"},
                "active_period": {"dtstart": start, "duration": timedelta(minutes=minutes)},
                "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "delta",
                                   "intervals": [{"dtstart": start, "duration": timedelta(minutes=minutes),
                                                  "signal_payload": -kw}]}]}

    assert ven.handle_event(event(0, 40.0)) == "optIn"
    ev = ctl.dr["oadr:M"]
    assert ven.handle_event(event(1, 55.0, minutes=90)) == "optIn"
    assert ctl.dr["oadr:M"] is ev  # the same event, changed through modify_dr_event
    assert (ev.reduction_kw, ev.duration_s, ev.opt) == (55.0, 5400.0, "in")
    assert ven.handle_event(event(2, 70.0)) == "optOut"  # beyond the 60 kW headroom
    assert (ev.opt, ev.reduction_kw) == ("out", 70.0)
    assert ctl.hist.dr_events()[0]["reduction_kw"] == 70.0 and ctl.hist.dr_events()[0]["opt"] == "out"
    # an interval that is already over is not created
    old = event(0, 5.0)
    old["event_descriptor"]["event_id"] = "OLD"
    old["active_period"]["dtstart"] = start - timedelta(hours=3)
    old["event_signals"][0]["intervals"][0]["dtstart"] = start - timedelta(hours=3)
    ven.handle_event(old)
    assert "oadr:OLD" not in ctl.dr
