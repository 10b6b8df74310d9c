"""Delivered-versus-requested performance of a DR event.

delivered(t) = baseline(t) - metered(t) over the event intervals (load convention, so a
reduction is positive). From that: the mean delivered kW, delivery % of the request, the
energy not consumed (kWh), and how many intervals were within a tolerance of the request.
Input is arrays (or Series on the same index) at one resolution: the baseline from
controller/dr/baseline.py and the metered power at the feeder head or summed over the
event's groups.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd


@dataclass
class Performance:
    event_id: str
    requested_kw: float
    delivered_kw: float  # mean over intervals with data
    delivery_pct: float  # 100 * delivered / requested
    energy_kwh: float  # reduction energy over the event
    requested_kwh: float
    intervals: int  # intervals with baseline and metered data
    intervals_missing: int
    intervals_within_tol: int  # |delivered - requested| <= tol_pct of requested
    min_delivered_kw: float
    max_delivered_kw: float
    tol_pct: float

    def as_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def evaluate(requested_kw: float, baseline_kw, metered_kw, dt_s: float, event_id: str = "",
             tol_pct: float = 5.0) -> Performance:
    """Performance from per-interval baseline and metered power (same length, kW)."""
    if requested_kw <= 0:
        raise ValueError(f"performance {event_id}: requested_kw={requested_kw}: must be > 0")
    if dt_s <= 0:
        raise ValueError(f"performance {event_id}: dt_s={dt_s}: must be > 0")
    b = np.asarray(baseline_kw, float)
    m = np.asarray(metered_kw, float)
    if b.shape != m.shape:
        raise ValueError(f"performance {event_id}: baseline has {b.size} intervals, "
                         f"metered has {m.size}")
    ok = np.isfinite(b) & np.isfinite(m)
    d = (b - m)[ok]
    n = int(ok.sum())
    mean = float(d.mean()) if n else float("nan")
    return Performance(
        event_id=event_id, requested_kw=float(requested_kw), delivered_kw=mean,
        delivery_pct=100.0 * mean / requested_kw if n else float("nan"),
        energy_kwh=float(d.sum() * dt_s / 3600.0),
        requested_kwh=float(requested_kw * b.size * dt_s / 3600.0),
        intervals=n, intervals_missing=int(b.size - n),
        intervals_within_tol=int((np.abs(d - requested_kw) <= tol_pct / 100.0 * requested_kw).sum()),
        min_delivered_kw=float(d.min()) if n else float("nan"),
        max_delivered_kw=float(d.max()) if n else float("nan"), tol_pct=tol_pct)


def evaluate_series(requested_kw: float, baseline: pd.Series, metered: pd.Series,
                    event_id: str = "", tol_pct: float = 5.0) -> Performance:
    """Same, with the metered Series resampled (mean) onto the baseline's intervals."""
    idx = baseline.index
    if len(idx) < 1:
        raise ValueError(f"performance {event_id}: empty baseline")
    step = (idx[1] - idx[0]) if len(idx) > 1 else pd.Timedelta(
        np.median(np.diff(metered.index.asi8)), unit="ns")
    m = metered.astype(float).resample(step, origin=idx[0]).mean().reindex(idx)
    return evaluate(requested_kw, baseline.to_numpy(float), m.to_numpy(), step.total_seconds(),
                    event_id, tol_pct)
