"""Meter-level performance of a finished DR event, from the historian's telemetry.

The controller's own figure is device-level (each device's baseline minus its metered power).
Settlement looks at the meter: the feeder-head meter's power (or, without one, the summed
power of the event's devices) against a 10-of-10 baseline with morning adjustment
(controller/dr/baseline.py) over the event window. When the historian cannot support that
baseline (fewer than 10 eligible prior days, gaps, no morning data) the result says so in
`baseline_method` ("device-level") and `baseline_days`, and the assessed figure falls back
to the device-level one.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from controller.dr.baseline import BaselineError, ten_of_ten
from controller.dr.performance import evaluate_series

DAYS = 10
LOOKBACK_DAYS = 45


def resolution_s(duration_s: float) -> float:
    """15-minute intervals for events of an hour or more, else 1-minute ones."""
    return 900.0 if duration_s >= 3600 and duration_s % 900 == 0 else 60.0


def load_series(hist, device_ids: list[str], since_t: float, until_t: float, step_s: float) -> pd.Series:
    """Summed good p_kw of `device_ids` per `step_s` interval (UTC index); an interval where a
    device has no good value is NaN."""
    if not device_ids:
        return pd.Series(dtype=float)
    rows = hist.good_values("p_kw", device_ids, since_t, until_t)
    if not rows:
        return pd.Series(dtype=float)
    df = pd.DataFrame(rows)
    df["k"] = (df["t"] // step_s) * step_s
    per = df.groupby(["k", "device_id"])["value"].mean().unstack()
    total = per.sum(axis=1, min_count=len(device_ids)).where(per.notna().sum(axis=1) == len(device_ids))
    idx = pd.to_datetime(total.index.to_numpy() * 1e9, utc=True)
    return pd.Series(total.to_numpy(float), index=idx, name="p_kw")


def _past_event_dates(hist, event_id: str) -> list:
    out = []
    for r in hist.dr_events(("completed", "active")):
        if r["id"] != event_id and r.get("opt", "in") == "in":
            out.append(pd.Timestamp(r["start_t"], unit="s", tz="UTC").date())
    return out


def assess(hist, event_id: str, start_t: float, end_t: float, reduction_kw: float,
           meter_ids: list[str], fleet_ids: list[str], device_perf: dict) -> dict:
    """Meter-level fields for the event's record (see module doc)."""
    ids, source = (meter_ids, "head_meter") if meter_ids else (fleet_ids, "fleet")
    step = resolution_s(end_t - start_t)
    # history reaches back far enough for the lookback days and the morning window
    s = load_series(hist, ids, start_t - (LOOKBACK_DAYS + 1) * 86400.0, end_t, step)
    out = {"baseline_method": "device-level", "baseline_days": 0, "baseline_factor": None,
           "baseline_source": source, "baseline_note": None, "meter_delivered_kw": None,
           "meter_delivery_pct": None, "meter_energy_kwh": None, "meter_intervals": 0}
    base = None
    try:
        if len(s) < 2:
            raise BaselineError(f"baseline: no {source} history in the historian")
        excl = _past_event_dates(hist, event_id)
        try:
            base = ten_of_ten(s, start_t, end_t, days=DAYS, lookback_days=LOOKBACK_DAYS,
                              exclude_dates=excl)
        except BaselineError as e:
            out["baseline_note"] = str(e)
            try:  # how many days there were, for the record
                out["baseline_days"] = len(ten_of_ten(s, start_t, end_t, days=DAYS, min_days=1,
                                                      lookback_days=LOOKBACK_DAYS, adjust=False,
                                                      exclude_dates=excl).days)
            except BaselineError:
                pass
    except BaselineError as e:
        out["baseline_note"] = str(e)
    if base is not None:
        perf = evaluate_series(reduction_kw, base.as_series(), s, event_id)
        if perf.intervals == 0:
            out["baseline_note"] = "no metered data inside the event window"
            base = None
        else:
            out.update({"baseline_method": base.method, "baseline_days": len(base.days),
                        "baseline_factor": round(base.factor, 4),
                        "meter_delivered_kw": round(perf.delivered_kw, 3),
                        "meter_delivery_pct": round(perf.delivery_pct, 2),
                        "meter_energy_kwh": round(perf.energy_kwh, 3),
                        "meter_intervals": perf.intervals})
    if base is None:
        out["assessed_delivered_kw"] = device_perf.get("delivered_kw")
        out["assessed_delivery_pct"] = device_perf.get("delivery_pct")
    else:
        out["assessed_delivered_kw"] = out["meter_delivered_kw"]
        out["assessed_delivery_pct"] = out["meter_delivery_pct"]
    return {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in out.items()}
