"""Meter-level DR performance from the historian (controller/dr/metered.py): 10-of-10 with
morning adjustment over the head meter's telemetry, past event days excluded, and the
device-level fallback, stated in the record, when the history is too short."""

from datetime import UTC, datetime

import numpy as np
import pytest

from controller.dr.metered import assess
from controller.historian import Historian

EVENT_START = datetime(2026, 7, 15, 17, tzinfo=UTC).timestamp()  # a Wednesday
EVENT_END = EVENT_START + 3600
CUT_KW = 40.0
DEVICE = {"delivered_kw": 37.5, "delivery_pct": 93.75}


def load_kw(t):
    h = (t % 86400) / 3600.0
    return 200.0 + 50.0 * np.sin(2 * np.pi * (h - 6) / 24)


def historian(days_back: int, past_event_day: int | None = None) -> Historian:
    """Head-meter p_kw every 5 min: normal days, a morning 10 % above normal on the event day,
    CUT_KW below that during the event; `past_event_day` (days before) had a 100 kW event at the
    same hour, recorded as a completed DR event."""
    hist = Historian(":memory:", "NORMAL")
    day0 = EVENT_START - 17 * 3600
    old = None if past_event_day is None else EVENT_START - past_event_day * 86400
    for n, t in enumerate(np.arange(day0 - days_back * 86400, EVENT_END, 300.0)):
        p = load_kw(t)
        if t >= day0:
            p *= 1.1
            if t >= EVENT_START:
                p -= CUT_KW
        elif old is not None and old <= t < old + 3600:
            p -= 100.0
        hist.record_cycle(n + 1, float(t), {}, [("meter/0", "p_kw", float(p), "good")], [], [], [], (0, 0, 0))
    if past_event_day is not None:
        hist.upsert_dr_event({"id": "old", "start_t": EVENT_START - past_event_day * 86400,
                              "duration_s": 3600, "reduction_kw": 10, "status": "completed"}, 0.0)
    return hist


def test_ten_of_ten_with_morning_adjustment_measures_the_cut_at_the_meter():
    hist = historian(days_back=16, past_event_day=1)  # yesterday (Tue) was an event day: excluded
    r = assess(hist, "e", EVENT_START, EVENT_END, CUT_KW, ["meter/0"], ["bat/0"], DEVICE)
    assert r["baseline_method"] == "10-of-10+morning" and r["baseline_days"] == 10
    assert r["baseline_source"] == "head_meter" and r["baseline_note"] is None
    assert r["baseline_factor"] == pytest.approx(1.1, abs=1e-6)
    assert r["meter_delivered_kw"] == pytest.approx(CUT_KW, abs=0.01)
    assert r["meter_delivery_pct"] == pytest.approx(100.0, abs=0.05)
    assert r["meter_energy_kwh"] == pytest.approx(CUT_KW * 1.0, abs=0.01)  # one hour
    assert r["meter_intervals"] == 4  # 15-minute intervals for an hour-long event
    assert r["assessed_delivered_kw"] == r["meter_delivered_kw"]


def test_a_past_event_day_not_excluded_biases_the_baseline():
    # the same history with yesterday's event not on record (cancelled): its curtailed hour
    # enters the baseline (1 day in 10 at -100 kW, times the 1.1 morning factor): 11 kW less
    hist = historian(days_back=16, past_event_day=1)
    hist.set_dr_status("old", "cancelled", 0.0)
    biased = assess(hist, "e", EVENT_START, EVENT_END, CUT_KW, ["meter/0"], [], DEVICE)
    assert biased["meter_delivered_kw"] == pytest.approx(CUT_KW - 11.0, abs=0.01)


def test_short_history_falls_back_to_device_level_and_says_so():
    hist = historian(days_back=4)  # Sat..Tue: 2 weekdays
    r = assess(hist, "e", EVENT_START, EVENT_END, CUT_KW, ["meter/0"], [], DEVICE)
    assert (r["baseline_method"], r["baseline_days"]) == ("device-level", 2)
    assert "only 2 eligible days" in r["baseline_note"]
    assert r["meter_delivered_kw"] is None
    assert (r["assessed_delivered_kw"], r["assessed_delivery_pct"]) == (37.5, 93.75)


def test_without_a_meter_the_fleet_telemetry_is_used():
    hist = Historian(":memory:", "NORMAL")
    r = assess(hist, "e", EVENT_START, EVENT_START + 600, 5.0, [], ["bat/0", "bat/1"], DEVICE)
    assert (r["baseline_source"], r["baseline_method"], r["baseline_days"]) == ("fleet", "device-level", 0)
    assert "no fleet history" in r["baseline_note"]
