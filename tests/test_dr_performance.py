"""Delivered-vs-requested performance of an event."""

import numpy as np
import pandas as pd
import pytest

from controller.dr.performance import evaluate, evaluate_series


def test_known_event_numbers():
    base = np.full(4, 100.0)
    metered = np.array([60.0, 62.0, 58.0, np.nan])
    p = evaluate(40.0, base, metered, dt_s=900, event_id="e1")
    assert p.intervals == 3 and p.intervals_missing == 1
    assert p.delivered_kw == pytest.approx(40.0)
    assert p.delivery_pct == pytest.approx(100.0)
    assert p.energy_kwh == pytest.approx(120.0 * 0.25)
    assert p.requested_kwh == pytest.approx(40.0)
    assert p.intervals_within_tol == 3  # 38, 40, 42 all within 5 % (2 kW)
    assert p.min_delivered_kw == 38.0 and p.max_delivered_kw == 42.0


def test_one_minute_meter_on_15_minute_baseline():
    idx = pd.date_range("2026-07-15 14:00", periods=4, freq="15min", tz="UTC")
    baseline = pd.Series([100.0, 100.0, 120.0, 120.0], index=idx)
    m_idx = pd.date_range(idx[0], periods=60, freq="1min", tz="UTC")
    metered = pd.Series(np.r_[np.full(30, 70.0), np.full(30, 96.0)], index=m_idx)
    p = evaluate_series(30.0, baseline, metered, event_id="e2")
    assert p.delivered_kw == pytest.approx(27.0) and p.delivery_pct == pytest.approx(90.0)
    assert p.intervals_within_tol == 2


def test_bad_input():
    with pytest.raises(ValueError, match="requested_kw=0"):
        evaluate(0.0, [1.0], [1.0], 60)
    with pytest.raises(ValueError, match="baseline has 2 intervals, metered has 1"):
        evaluate(5.0, [1.0, 2.0], [1.0], 60)
