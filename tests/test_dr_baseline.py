"""Customer baselines on synthetic meter data whose answer is known by construction."""

import numpy as np
import pandas as pd
import pytest

from controller.dr.baseline import BaselineError, previous_intervals, ten_of_ten

EVENT_DAY = pd.Timestamp("2026-07-15", tz="UTC")  # a Wednesday
START, END = EVENT_DAY + pd.Timedelta(hours=14), EVENT_DAY + pd.Timedelta(hours=18)


def profile(idx):
    h = np.asarray(idx.hour + idx.minute / 60.0, float)
    return 20.0 + 10.0 * np.sin(np.pi * h / 24.0)


def day_mult(d):  # distinct per day so the chosen days are identifiable
    return 1.0 + 0.01 * (d - pd.Timestamp("2026-06-01", tz="UTC")).days


def history(event_day_mult=None, freq="15min"):
    idx = pd.date_range("2026-06-01", "2026-07-16", freq=freq, tz="UTC", inclusive="left")
    days = idx.normalize()
    mult = np.array([day_mult(d) for d in days])
    kw = profile(idx) * mult
    kw[idx.dayofweek >= 5] = 100.0  # weekends look nothing like weekdays
    s = pd.Series(kw, index=idx)
    s[(idx >= "2026-07-09 15:00") & (idx < "2026-07-09 15:30")] = np.nan  # meter gap
    if event_day_mult is not None:
        today = idx.normalize() == EVENT_DAY
        s[today] = profile(idx[today]) * event_day_mult
    return s


# 10 most recent weekdays before 7/15, skipping the past event day 7/13 and the gappy 7/9
DAYS = ["2026-07-14", "2026-07-10", "2026-07-08", "2026-07-07", "2026-07-06", "2026-07-03",
        "2026-07-02", "2026-07-01", "2026-06-30", "2026-06-29"]
MEAN_MULT = np.mean([day_mult(pd.Timestamp(d, tz="UTC")) for d in DAYS])


def test_ten_of_ten_unadjusted_known_answer():
    b = ten_of_ten(history(), START, END, exclude_dates=["2026-07-13"], adjust=False)
    assert [str(d) for d in b.days] == DAYS
    expect = profile(b.index) * MEAN_MULT
    assert len(b.kw) == 16 and np.allclose(b.kw, expect, rtol=1e-12)


@pytest.mark.parametrize("ratio, factor", [(1.1, 1.1), (0.95, 0.95), (1.5, 1.2), (0.5, 0.8)])
def test_morning_adjustment_is_the_pre_event_ratio_capped(ratio, factor):
    s = history(event_day_mult=ratio * MEAN_MULT)
    b = ten_of_ten(s, START, END, exclude_dates=["2026-07-13"], cap=0.2)
    assert b.raw_factor == pytest.approx(ratio, rel=1e-12)
    assert b.factor == pytest.approx(factor, rel=1e-12)
    assert np.allclose(b.kw, profile(b.index) * MEAN_MULT * factor, rtol=1e-12)


def test_one_minute_data_gives_the_same_answer():
    s = history(freq="1min")
    b = ten_of_ten(s, START, END, exclude_dates=["2026-07-13"], adjust=False)
    assert len(b.kw) == 240 and np.allclose(b.kw, profile(b.index) * MEAN_MULT)


def test_too_little_history_and_naive_times_are_clear_errors():
    s = history()
    # 7/14 and 7/13 are weekdays, 7/12 and 7/11 a weekend
    with pytest.raises(BaselineError, match="only 2 eligible days"):
        ten_of_ten(s, START, END, lookback_days=4)
    with pytest.raises(BaselineError, match="timezone"):
        ten_of_ten(s.tz_localize(None), START, END)


def test_previous_intervals_flat_mean():
    idx = pd.date_range("2026-07-15 12:00", periods=12, freq="15min", tz="UTC")
    s = pd.Series([9, 9, 9, 9, 10, 12, 14, 16, 50, 50, 50, 50], index=idx, dtype=float)
    b = previous_intervals(s, idx[8], idx[8] + pd.Timedelta(minutes=60), n=4)
    assert np.allclose(b.kw, 13.0) and len(b.kw) == 4
    with pytest.raises(BaselineError, match="missing"):
        previous_intervals(s, idx[2], idx[4], n=4)
