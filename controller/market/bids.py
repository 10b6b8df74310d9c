"""Day-ahead bids from the VPP's aggregate flexibility: price–quantity steps per interval.

Inputs are plain arrays so any flexibility model can feed them: upward flexibility
(kW the VPP can add as generation or shed as load) per interval, its marginal cost tiers,
and a share reserved for the reserve/regulation product.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.market.clearing import Order


@dataclass
class BidCurve:
    interval: int
    product: str  # "energy" | "reserve"
    steps: list[tuple[float, float]]  # (price EUR/MWh, quantity MW), ascending price

    def orders(self, bidder: str) -> list[Order]:
        return [Order(bidder, "supply", p, q) for p, q in self.steps if q > 0]


def build_bids(up_flex_kw: np.ndarray, cost_tiers_eur_per_mwh: list[float],
               tier_shares: list[float], reserve_share: float = 0.2,
               reserve_price_eur_per_mwh: float = 15.0) -> list[BidCurve]:
    """Split each interval's upward flexibility into energy steps (one per cost tier) and a
    reserve bid holding `reserve_share` of it back."""
    if len(cost_tiers_eur_per_mwh) != len(tier_shares) or abs(sum(tier_shares) - 1) > 1e-9:
        raise ValueError("cost tiers and shares must have equal length and shares must sum to 1")
    if not 0 <= reserve_share <= 1:
        raise ValueError(f"reserve_share {reserve_share} must be within [0, 1]")
    curves = []
    for k, flex in enumerate(np.maximum(np.asarray(up_flex_kw, float), 0.0)):
        energy_mw = flex * (1 - reserve_share) / 1000.0
        steps = [(c, energy_mw * s) for c, s in zip(cost_tiers_eur_per_mwh, tier_shares)]
        curves.append(BidCurve(k, "energy", steps))
        curves.append(BidCurve(k, "reserve", [(reserve_price_eur_per_mwh, flex * reserve_share / 1000.0)]))
    return curves


def synthetic_market(interval: int, seed: int, demand_mw: float, n_generators: int = 8) -> list[Order]:
    """Other bidders for one interval: generators with rising costs, inelastic-ish demand."""
    rng = np.random.default_rng([seed, interval])
    orders = [Order(f"gen{g}", "supply", float(p), float(q)) for g, (p, q) in enumerate(
        zip(np.sort(rng.uniform(20, 160, n_generators)), rng.uniform(2, 8, n_generators)))]
    orders.append(Order("load", "demand", 500.0, demand_mw * 0.8))
    orders.append(Order("load_flex", "demand", float(rng.uniform(60, 120)), demand_mw * 0.2))
    return orders
