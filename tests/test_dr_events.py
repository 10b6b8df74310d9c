"""DrManager: lifecycle, validation, change log and restore after a restart."""

from datetime import UTC, datetime

import pytest

from controller.dr.events import DrError, DrManager
from scenarios.model import DrEvent as ScenarioDrEvent

T0 = 1_780_000_000.0


def test_lifecycle_transitions_and_change_log():
    log = []
    mgr = DrManager(on_change=lambda d, a: log.append((a, d["id"], d["status"], d["opt"])))
    ev = mgr.create(T0 + 600, T0 + 2400, 50.0, groups=["bat"], created_by="op", id="e1", t=T0)
    assert ev.status == "pending" and mgr.active(T0) == []
    assert mgr.update(T0 + 600) == [ev] and ev.status == "active"
    assert [e.id for e in mgr.active(T0 + 601)] == ["e1"]
    assert mgr.requested_kw(T0 + 601, "bat") == 50.0
    assert mgr.requested_kw(T0 + 601, "ev") == 0.0  # not one of the event's groups
    assert mgr.update(T0 + 601) == []  # no change, no log entry
    mgr.update(T0 + 2400)
    assert ev.status == "completed" and mgr.active(T0 + 2400) == []
    assert log == [("created", "e1", "pending", "in"), ("status", "e1", "active", "in"),
                   ("status", "e1", "completed", "in")]
    with pytest.raises(DrError, match="already completed"):
        mgr.cancel("e1")


def test_cancel_and_opt_out_remove_the_event_from_dispatch():
    mgr = DrManager()
    a = mgr.create(T0, T0 + 900, 20.0, id="a")
    b = mgr.create(T0, T0 + 900, 30.0, id="b")
    assert mgr.requested_kw(T0 + 1) == 50.0
    mgr.cancel("a", by="op")
    assert a.status == "cancelled" and a.updated_by == "op"
    mgr.update(T0 + 10)
    assert a.status == "cancelled"  # update never revives a cancelled event
    mgr.opt("b", "out", by="ven")
    assert mgr.requested_kw(T0 + 1) == 0.0
    mgr.opt("b", "in")
    assert mgr.requested_kw(T0 + 1) == 30.0 and b.opt == "in"


@pytest.mark.parametrize("kwargs, text", [
    ({"start_t": T0, "end_t": T0, "reduction_kw": 5}, "end_t"),
    ({"start_t": T0, "end_t": T0 + 60, "reduction_kw": -5}, "reduction_kw=-5"),
    ({"start_t": T0, "end_t": T0 + 60, "reduction_kw": 5, "source": "email"}, "source='email'"),
    ({"start_t": T0, "end_t": T0 + 60, "reduction_kw": 5, "groups": []}, "groups"),
    ({"start_t": float("nan"), "end_t": T0 + 60, "reduction_kw": 5}, "start_t"),
])
def test_bad_input_is_one_clear_line(kwargs, text):
    with pytest.raises(DrError) as ei:
        DrManager().create(**kwargs)
    assert text in str(ei.value) and "\n" not in str(ei.value)


def test_duplicate_and_unknown_ids():
    mgr = DrManager()
    mgr.create(T0, T0 + 60, 1.0, id="x")
    with pytest.raises(DrError, match="already exists"):
        mgr.create(T0, T0 + 60, 1.0, id="x")
    with pytest.raises(DrError, match="no such event"):
        mgr.cancel("nope")
    with pytest.raises(DrError, match="opt='maybe'"):
        mgr.opt("x", "maybe")


def test_restore_from_change_log_resumes_the_active_event():
    rows = []  # what a historian would hold: one row per change
    mgr = DrManager(on_change=lambda d, a: rows.append(d))
    mgr.create(T0, T0 + 3600, 40.0, groups=["bat", "ev"], id="live", t=T0 - 5)
    mgr.create(T0, T0 + 3600, 10.0, id="gone")
    mgr.cancel("gone")
    mgr.modify("live", reduction_kw=45.0, by="op")
    mgr.update(T0 + 100)
    # "restart": a new manager from the latest row per id
    latest = {r["id"]: r for r in rows}
    again = DrManager()
    assert again.restore(list(latest.values()), t=T0 + 200) == 2
    assert [e.id for e in again.active(T0 + 200)] == ["live"]
    live = again.get("live")
    assert live.reduction_kw == 45.0 and live.modification == 1 and live.groups == ["bat", "ev"]
    assert again.get("gone").status == "cancelled"
    assert again.to_dicts() == mgr.to_dicts()


def test_from_scenario_event():
    spec = ScenarioDrEvent(id="peak", start=datetime(2026, 7, 1, 17, tzinfo=UTC),
                           duration_s=3600, reduction_kw=80.0, groups=["home_batteries"])
    ev = DrManager().create_from_scenario(spec)
    assert ev.source == "scenario" and ev.end_t - ev.start_t == 3600
    assert ev.start_t == datetime(2026, 7, 1, 17, tzinfo=UTC).timestamp()
