"""Position tracking: awarded quantities as dispatch targets, delivered vs awarded, imbalance."""

from __future__ import annotations

import numpy as np


class Position:
    """Per-interval awards (kW) for one day and what was delivered against them."""

    def __init__(self, n_intervals: int, interval_s: float = 900.0):
        self.interval_s = interval_s
        self.awarded_kw = np.zeros(n_intervals)
        self.price_eur_per_mwh = np.full(n_intervals, np.nan)
        self.delivered_kw = np.full(n_intervals, np.nan)

    def award(self, interval: int, quantity_kw: float, price_eur_per_mwh: float) -> None:
        self.awarded_kw[interval] += quantity_kw
        self.price_eur_per_mwh[interval] = price_eur_per_mwh

    def target_kw(self, interval: int) -> float:
        """The dispatch target: upward flexibility to deliver in this interval."""
        return float(self.awarded_kw[interval])

    def deliver(self, interval: int, delivered_kw: float) -> None:
        self.delivered_kw[interval] = delivered_kw

    def imbalance_kwh(self) -> np.ndarray:
        """Delivered minus awarded energy per settled interval (negative: short)."""
        return (self.delivered_kw - self.awarded_kw) * self.interval_s / 3600.0

    def summary(self) -> dict:
        done = ~np.isnan(self.delivered_kw)
        imb = self.imbalance_kwh()[done]
        return {"awarded_kwh": float(self.awarded_kw.sum() * self.interval_s / 3600.0),
                "delivered_kwh": float(np.nansum(self.delivered_kw) * self.interval_s / 3600.0),
                "short_kwh": float(-imb[imb < 0].sum()), "long_kwh": float(imb[imb > 0].sum()),
                "settled_intervals": int(done.sum())}
