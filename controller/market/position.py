"""Position tracking through the day: awards become per-interval dispatch targets, metered
delivery is booked against them as it arrives, and the imbalance is known at any time.

Sign convention (the project's load convention): a target or a delivery is the change of
the fleet's net load against its baseline, delta_p_kw = metered - baseline. Selling upward
flexibility (energy "up") means a negative target; buying energy ("down") a positive one.
Imbalance = delivered - target: positive is short (the fleet consumed more than it sold),
negative is long.
"""

from __future__ import annotations

import numpy as np


class Position:
    """Awards (kW per interval) for one trading day and what was delivered against them."""

    def __init__(self, n_intervals: int, interval_s: float = 900.0):
        self.interval_s = float(interval_s)
        self.up_kw = np.zeros(n_intervals)  # energy sold (upward flexibility)
        self.down_kw = np.zeros(n_intervals)  # energy bought (downward flexibility)
        self.reserve_kw = np.zeros(n_intervals)  # capacity held for regulation, both directions
        self.energy_price_eur_per_mwh = np.full(n_intervals, np.nan)
        self.reserve_price_eur_per_mw_h = np.full(n_intervals, np.nan)
        self.delivered_kw = np.full(n_intervals, np.nan)  # metered delta_p_kw, NaN until booked

    @property
    def dt_h(self) -> float:
        return self.interval_s / 3600.0

    def award_energy(self, interval: int, up_kw: float, down_kw: float, price_eur_per_mwh: float) -> None:
        self.up_kw[interval] += up_kw
        self.down_kw[interval] += down_kw
        self.energy_price_eur_per_mwh[interval] = price_eur_per_mwh

    def award_reserve(self, interval: int, kw: float, price_eur_per_mw_h: float) -> None:
        self.reserve_kw[interval] += kw
        self.reserve_price_eur_per_mw_h[interval] = price_eur_per_mw_h

    def targets_kw(self) -> np.ndarray:
        """The dispatch targets: change of net load vs baseline per interval (load convention)."""
        return self.down_kw - self.up_kw

    def headroom_kw(self, up_flex_kw: np.ndarray, down_flex_kw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Flexibility left for intraday use after the energy awards and the reserve held."""
        return (np.maximum(up_flex_kw - self.up_kw + self.down_kw - self.reserve_kw, 0.0),
                np.maximum(down_flex_kw - self.down_kw + self.up_kw - self.reserve_kw, 0.0))

    def deliver(self, interval: int, delivered_delta_kw: float) -> None:
        self.delivered_kw[interval] = delivered_delta_kw

    def imbalance_kw(self) -> np.ndarray:
        """Delivered minus target per interval (NaN where not yet metered)."""
        return self.delivered_kw - self.targets_kw()

    def summary(self) -> dict:
        done = ~np.isnan(self.delivered_kw)
        imb = self.imbalance_kw()[done] * self.dt_h
        price = np.nan_to_num(self.energy_price_eur_per_mwh)
        rprice = np.nan_to_num(self.reserve_price_eur_per_mw_h)
        return {"sold_kwh": float(self.up_kw.sum() * self.dt_h),
                "bought_kwh": float(self.down_kw.sum() * self.dt_h),
                "reserve_mwh_h": float(self.reserve_kw.sum() / 1000 * self.dt_h),
                "energy_revenue_eur": float(((self.up_kw - self.down_kw) * price).sum() / 1000 * self.dt_h),
                "reserve_revenue_eur": float((self.reserve_kw * rprice).sum() / 1000 * self.dt_h),
                "settled_intervals": int(done.sum()),
                "remaining_target_kwh": float(np.abs(self.targets_kw()[~done]).sum() * self.dt_h),
                "short_kwh": float(imb[imb > 0].sum()), "long_kwh": float(-imb[imb < 0].sum())}
