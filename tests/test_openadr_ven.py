"""OpenADR 2.0b on loopback: a real openleadr VTN sends an event to the controller's VEN;
the event reaches the DrManager and the allocation, and the opt answer reaches the VTN."""

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from groups import group
from openadr_vtn import VEN_ID, Vtn, wait_for
from ports import free_port

from controller.dr.events import DrManager
from controller.dr.openadr_ven import OpenAdrVen, VenError
from controller.kinds import KINDS
from controller.kinds import allocate as kinds_allocate


@pytest.fixture
def vtn():
    v = Vtn()
    yield v
    v.stop()


def batteries():
    return group("home_batteries", "battery", 12, p_kw=[0.0] * 12, soc_kwh=[9.0] * 12,
                 r_p_max_kw=[5.0] * 12, r_soc_min_kwh=[1.0] * 12)


def allocate(g, need_kw):
    """The cycle's allocation over one battery group (controller.kinds)."""
    k = KINDS["battery"]
    base = k.baseline_kw(g)
    cut = kinds_allocate(need_kw, {g.group: k.headroom_kw(g, base, 1.0)})[g.group]
    return cut, k.setpoint_for_cut(g, base, cut)


def test_vtn_event_reaches_dispatch_and_opt_in_is_reported(vtn):
    changes = []
    mgr = DrManager(on_change=lambda d, a: changes.append((a, d["id"], d["opt"])))
    res = batteries()
    ven = OpenAdrVen(mgr, vtn.url, headroom_kw=lambda: float(allocate(res, 1e9)[0].sum()),
                     telemetry_kw=lambda: 12.5, report_sampling_s=1.0)
    ven.start(timeout_s=10)
    try:
        assert ven.registered and ven.ven_id == VEN_ID
        start = datetime.now(UTC).replace(microsecond=0) + timedelta(minutes=5)
        vtn.add_event("EV1", -40.0, start, targets=[{"resource_id": "home_batteries"}])
        ven.poll_now()
        assert wait_for(lambda: vtn.opts), "VTN never got the opt response"
        assert vtn.opts == [(VEN_ID, "EV1", "optIn")]
        ev = mgr.get("oadr:EV1")
        assert (ev.source, ev.opt, ev.reduction_kw, ev.groups) == (
            "openadr", "in", 40.0, ["home_batteries"])
        assert ev.start_t == start.timestamp() and ev.end_t - ev.start_t == 1800
        assert ("created", "oadr:EV1", "in") in changes  # persisted through on_change
        # inside the window the request drives the allocation
        t_mid = ev.start_t + 600
        need = mgr.requested_kw(t_mid, "home_batteries")
        cut, vals = allocate(res, need)
        assert need == 40.0 and cut.sum() == pytest.approx(40.0)
        assert -vals.sum() == pytest.approx(40.0) and np.all((-5.0 <= vals) & (vals <= 0))
        # telemetry report reached the VTN
        assert wait_for(lambda: vtn.reports, timeout_s=5.0), "no report arrived"
        assert vtn.reports[0][1] == 12.5
    finally:
        ven.stop()
    assert not ven.errors


def test_event_beyond_headroom_is_opted_out(vtn):
    mgr = DrManager()
    ven = OpenAdrVen(mgr, vtn.url, headroom_kw=lambda: 25.0).start(timeout_s=10)
    try:
        start = datetime.now(UTC) + timedelta(minutes=1)
        vtn.add_event("BIG", -40.0, start)
        ven.poll_now()
        assert wait_for(lambda: vtn.opts)
        assert vtn.opts == [(VEN_ID, "BIG", "optOut")]
        ev = mgr.get("oadr:BIG")
        assert ev.opt == "out" and mgr.requested_kw(ev.start_t + 1) == 0.0
    finally:
        ven.stop()


def test_unreachable_vtn_is_one_clear_error():
    port = free_port()  # nothing listens there
    ven = OpenAdrVen(DrManager(), f"http://127.0.0.1:{port}/OpenADR2/Simple/2.0b")
    with pytest.raises(VenError, match=f"127.0.0.1:{port}"):
        ven.start(timeout_s=5)


def test_translate_levels_and_capacity_without_network():
    ven = OpenAdrVen(DrManager(), "http://127.0.0.1:1/x", contracted_kw=90.0)
    start = datetime(2026, 7, 1, 17, tzinfo=UTC)
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
    # a cancel from the VTN cancels both intervals
    assert ven.handle_event(ev) == "optIn"
    ev["event_descriptor"]["event_status"] = "cancelled"
    ven.handle_event(ev)
    assert {e.status for e in ven.manager.list()} == {"cancelled"}


def test_modification_updates_the_event_and_keeps_the_opt():
    mgr = DrManager()
    ven = OpenAdrVen(mgr, "http://127.0.0.1:1/x", headroom_kw=lambda: 60.0)
    start = datetime(2026, 7, 1, 17, tzinfo=UTC)

    def event(mod, kw):
        return {"event_descriptor": {"event_id": "M", "modification_number": mod,
                                     "event_status": "far"},
                "active_period": {"dtstart": start, "duration": timedelta(hours=1)},
                "event_signals": [{"signal_name": "LOAD_DISPATCH", "signal_type": "delta",
                                   "intervals": [{"dtstart": start, "duration": timedelta(hours=1),
                                                  "signal_payload": -kw}]}]}

    assert ven.handle_event(event(0, 40.0)) == "optIn"
    assert ven.handle_event(event(1, 55.0)) == "optIn"
    ev = mgr.get("oadr:M")
    assert ev.reduction_kw == 55.0 and ev.modification == 1 and ev.opt == "in"
    assert ven.handle_event(event(2, 70.0)) == "optOut"  # beyond the 60 kW headroom
    assert mgr.get("oadr:M").opt == "out" and mgr.get("oadr:M").reduction_kw == 70.0
