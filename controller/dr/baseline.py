"""Customer baselines: what the metered load would have been without the DR event.

Two methods, both on a pandas Series of kW indexed by UTC time at a regular resolution
(15 min or 1 min) and an event window [start, end):

- `ten_of_ten`: the mean of the `days` (10) most recent eligible days at the same clock
  intervals. Eligible: same day type as the event day (weekday/weekend, in `tz`), not an
  excluded (past event or holiday) day, and complete data over the window and the
  adjustment window. Then the morning (same-day, pre-event) adjustment: the ratio of the
  event day's actual load to the baseline days' load over the `adj_len_h` hours ending
  `adj_gap_h` before the start (the gap keeps pre-cooling out of it), capped to
  1 ± `cap` (0.2 = ±20 %), multiplies the whole baseline.
- `previous_intervals`: the mean of the `n` intervals just before the start, held flat.
  For short events (minutes) where day-matching says little.

Both return a `Baseline` (kw array over the window intervals, its index, the days used, the
adjustment factor) or raise `BaselineError` (one line) when the data cannot support one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd


class BaselineError(ValueError):
    """The history cannot support the requested baseline (too few days, gaps, bad index)."""


@dataclass
class Baseline:
    method: str
    index: pd.DatetimeIndex  # interval start times covered by the event window
    kw: np.ndarray  # baseline per interval (adjusted)
    unadjusted_kw: np.ndarray
    factor: float = 1.0  # morning adjustment factor applied (1.0 when none)
    raw_factor: float = 1.0  # before the cap
    days: list = field(default_factory=list)  # dates of the baseline days used

    def as_series(self) -> pd.Series:
        return pd.Series(self.kw, index=self.index, name="baseline_kw")


def _check_series(s: pd.Series) -> pd.Timedelta:
    if not isinstance(s.index, pd.DatetimeIndex):
        raise BaselineError("baseline: series index must be a DatetimeIndex (UTC)")
    if s.index.tz is None:
        raise BaselineError("baseline: series index must be timezone-aware (UTC)")
    if len(s) < 2:
        raise BaselineError(f"baseline: series has {len(s)} points, need history")
    if not s.index.is_monotonic_increasing or s.index.has_duplicates:
        raise BaselineError("baseline: series index must be increasing without duplicates")
    step = pd.Timedelta(np.median(np.diff(s.index.asi8)), unit="ns")
    if step <= pd.Timedelta(0):
        raise BaselineError("baseline: cannot infer the interval length")
    return step


def _ts(x) -> pd.Timestamp:
    t = pd.Timestamp(x, unit="s", tz="UTC") if isinstance(x, (int, float)) else pd.Timestamp(x)
    if t.tzinfo is None:
        raise BaselineError(f"baseline: time {x!r} has no timezone (use UTC)")
    return t.tz_convert("UTC")


def window_index(start, end, step: pd.Timedelta) -> pd.DatetimeIndex:
    start, end = _ts(start), _ts(end)
    if end <= start:
        raise BaselineError(f"baseline: end {end} is not after start {start}")
    return pd.date_range(start, end, freq=step, inclusive="left")


def ten_of_ten(series: pd.Series, start, end, *, days: int = 10, lookback_days: int = 45,
               exclude_dates=(), tz: str = "UTC", same_day_type: bool = True,
               adjust: bool = True, adj_len_h: float = 2.0, adj_gap_h: float = 1.0,
               cap: float = 0.2, min_days: int | None = None) -> Baseline:
    """X-of-X baseline with capped multiplicative morning adjustment (see module doc)."""
    step = _check_series(series)
    win = window_index(start, end, step)
    adj = (pd.date_range(win[0] - pd.Timedelta(hours=adj_gap_h + adj_len_h),
                         win[0] - pd.Timedelta(hours=adj_gap_h), freq=step, inclusive="left")
           if adjust else pd.DatetimeIndex([], tz="UTC"))
    s = series.astype(float)
    local_day = win[0].tz_convert(tz)
    weekend = local_day.dayofweek >= 5
    excluded = {pd.Timestamp(d).date() for d in exclude_dates}
    rows, adj_rows, used = [], [], []
    for k in range(1, lookback_days + 1):
        shift = pd.Timedelta(days=k)
        day = (local_day - shift).date()
        if day in excluded:
            continue
        if same_day_type and ((local_day - shift).dayofweek >= 5) != weekend:
            continue
        vals = s.reindex(win - shift).to_numpy()
        avals = s.reindex(adj - shift).to_numpy()
        if not (np.isfinite(vals).all() and np.isfinite(avals).all()):
            continue
        rows.append(vals)
        adj_rows.append(avals)
        used.append(day)
        if len(rows) == days:
            break
    need = days if min_days is None else min_days
    if len(rows) < need:
        raise BaselineError(f"baseline: only {len(rows)} eligible days in the {lookback_days} "
                            f"days before {win[0]}, need {need}")
    base = np.mean(rows, axis=0)
    factor = raw = 1.0
    if adjust and len(adj):
        actual = s.reindex(adj).to_numpy()
        if not np.isfinite(actual).all():
            raise BaselineError(f"baseline: event-day data missing in the adjustment window "
                                f"{adj[0]}..{adj[-1]}")
        ref = float(np.mean(adj_rows))
        raw = float(actual.mean() / ref) if ref > 1e-9 else 1.0
        factor = float(np.clip(raw, 1.0 - cap, 1.0 + cap))
    return Baseline(f"{days}-of-{days}" + ("+morning" if adjust else ""), win, base * factor,
                    base, factor, raw, used)


def previous_intervals(series: pd.Series, start, end, n: int = 4) -> Baseline:
    """Flat baseline at the mean of the n intervals right before the start."""
    step = _check_series(series)
    win = window_index(start, end, step)
    before = pd.date_range(win[0] - n * step, win[0], freq=step, inclusive="left")
    vals = series.astype(float).reindex(before).to_numpy()
    if not np.isfinite(vals).all():
        raise BaselineError(f"baseline: data missing in the {n} intervals before {win[0]}")
    base = np.full(len(win), float(vals.mean()))
    return Baseline(f"previous-{n}", win, base, base.copy())
