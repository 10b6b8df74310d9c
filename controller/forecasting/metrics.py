"""Forecast accuracy metrics."""

from __future__ import annotations

import numpy as np


def mape(actual, forecast, floor_frac: float = 0.05) -> float:
    """Mean absolute percentage error (%), skipping points below floor_frac x max(|actual|)
    (night-time PV would otherwise divide by ~0)."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    keep = np.abs(a) > floor_frac * np.abs(a).max()
    return float(100.0 * np.mean(np.abs(f[keep] - a[keep]) / np.abs(a[keep])))


def nrmse(actual, forecast) -> float:
    """Root-mean-square error normalised by the range of the actual series (%)."""
    a, f = np.asarray(actual, float), np.asarray(forecast, float)
    span = a.max() - a.min()
    return float(100.0 * np.sqrt(np.mean((f - a) ** 2)) / (span if span > 0 else 1.0))
