"""Day-ahead bids from the VPP's aggregate flexibility: price–quantity steps per interval,
for energy (both directions) and a symmetric reserve/regulation capacity product.

Inputs are plain arrays (one value per market interval, kW and EUR/MWh) so any flexibility
model or forecaster can feed them; `FlexibilityForecast` documents them. What is bid:

- firm flexibility = forecast minus `z_sigma` standard deviations of its error (never < 0):
  the VPP only sells what it expects to deliver with high probability;
- reserve: `reserve_share` of the firm flexibility available in *both* directions is held
  back and offered as capacity at `reserve_price_eur_per_mw_h` (EUR per MW per hour);
- energy up (less load / more generation: the VPP sells): the rest of the firm upward
  flexibility as supply steps, one per cost tier, priced at marginal cost x tier factor;
- energy down (more load / charging: the VPP buys): the rest of the firm downward
  flexibility as demand steps, priced at `down_value_eur_per_mwh` x tier factor (what the
  energy is worth to the fleet, e.g. avoided later purchase; falling with quantity).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from controller.market.clearing import Order

PRODUCTS = ("energy", "reserve")


@dataclass
class FlexibilityForecast:
    """Per-interval inputs to bidding (all arrays of length n_intervals).

    up_kw / down_kw: expected flexibility the fleet can provide in each direction (>= 0).
    up_sigma_kw / down_sigma_kw: standard deviation of that forecast's error (>= 0).
    marginal_cost_eur_per_mwh: cost of delivering upward flexibility (incentives paid to
        participants, battery wear, rebound energy).
    down_value_eur_per_mwh: what extra consumption is worth to the fleet.
    """

    up_kw: np.ndarray
    down_kw: np.ndarray
    marginal_cost_eur_per_mwh: np.ndarray
    down_value_eur_per_mwh: np.ndarray
    up_sigma_kw: np.ndarray | None = None
    down_sigma_kw: np.ndarray | None = None

    def __post_init__(self):
        n = len(np.atleast_1d(self.up_kw))
        for name in ("up_kw", "down_kw", "marginal_cost_eur_per_mwh", "down_value_eur_per_mwh",
                     "up_sigma_kw", "down_sigma_kw"):
            v = getattr(self, name)
            v = np.zeros(n) if v is None else np.broadcast_to(np.asarray(v, float), (n,)).copy()
            if not np.all(np.isfinite(v)):
                raise ValueError(f"flexibility forecast: {name} has non-finite values")
            if name.endswith("kw") and np.any(v < 0):
                raise ValueError(f"flexibility forecast: {name} must be >= 0 (min {v.min():g})")
            setattr(self, name, v)
        if np.any(self.down_value_eur_per_mwh >= self.marginal_cost_eur_per_mwh):
            k = int(np.argmax(self.down_value_eur_per_mwh >= self.marginal_cost_eur_per_mwh))
            raise ValueError(f"flexibility forecast: interval {k}: down_value_eur_per_mwh "
                             f"{self.down_value_eur_per_mwh[k]:g} >= marginal_cost_eur_per_mwh "
                             f"{self.marginal_cost_eur_per_mwh[k]:g} (the VPP would trade with itself)")

    @property
    def n(self) -> int:
        return len(self.up_kw)


@dataclass
class BidCurve:
    """One product's steps in one interval, from the VPP's side."""

    interval: int
    product: str  # "energy" | "reserve"
    side: str  # "supply" (VPP sells: up energy, reserve) | "demand" (VPP buys: down energy)
    steps: list[tuple[float, float]]  # (price, quantity MW); energy EUR/MWh, reserve EUR/MW/h

    @property
    def quantity_mw(self) -> float:
        return sum(q for _, q in self.steps)

    def orders(self, bidder: str) -> list[Order]:
        return [Order(bidder, self.side, p, q) for p, q in self.steps if q > 0]


def build_bids(flex: FlexibilityForecast, tier_factors: tuple[float, ...] = (1.0, 1.5),
               tier_shares: tuple[float, ...] = (0.5, 0.5), reserve_share: float = 0.2,
               reserve_price_eur_per_mw_h: float = 8.0, z_sigma: float = 1.0) -> list[BidCurve]:
    """Bid curves for every interval: energy supply (up), energy demand (down), reserve."""
    if len(tier_factors) != len(tier_shares) or abs(sum(tier_shares) - 1) > 1e-9 or min(tier_shares) < 0:
        raise ValueError("tier factors and shares must have equal length; shares >= 0 summing to 1")
    if not 0 <= reserve_share <= 1:
        raise ValueError(f"reserve_share {reserve_share} must be within [0, 1]")
    firm_up = np.maximum(flex.up_kw - z_sigma * flex.up_sigma_kw, 0.0)
    firm_down = np.maximum(flex.down_kw - z_sigma * flex.down_sigma_kw, 0.0)
    reserve_kw = reserve_share * np.minimum(firm_up, firm_down)
    curves = []
    for k in range(flex.n):
        up_mw, down_mw = (firm_up[k] - reserve_kw[k]) / 1000.0, (firm_down[k] - reserve_kw[k]) / 1000.0
        mc, dv = flex.marginal_cost_eur_per_mwh[k], flex.down_value_eur_per_mwh[k]
        curves.append(BidCurve(k, "energy", "supply", [(round(mc * f, 2), up_mw * s)
                                                        for f, s in zip(tier_factors, tier_shares)]))
        curves.append(BidCurve(k, "energy", "demand", [(round(dv / f, 2), down_mw * s)
                                                        for f, s in zip(tier_factors, tier_shares)]))
        curves.append(BidCurve(k, "reserve", "supply", [(reserve_price_eur_per_mw_h, reserve_kw[k] / 1000.0)]))
    return curves


def synthetic_energy_market(interval: int, seed: int, demand_mw: float, n_generators: int = 8) -> list[Order]:
    """Other bidders for one energy interval: generators with rising costs, a mostly inelastic
    demand and some price-responsive demand. Same (seed, interval), same orders."""
    rng = np.random.default_rng([seed, interval, 1])
    orders = [Order(f"gen{g}", "supply", round(float(p), 2), round(float(q), 3)) for g, (p, q) in enumerate(
        zip(np.sort(rng.uniform(20, 160, n_generators)), rng.uniform(2, 8, n_generators)))]
    orders.append(Order("load", "demand", 3000.0, round(demand_mw * 0.8, 3)))
    orders.append(Order("load_flex", "demand", round(float(rng.uniform(60, 120)), 2), round(demand_mw * 0.2, 3)))
    return orders


def synthetic_reserve_market(interval: int, seed: int, requirement_mw: float, n_providers: int = 5) -> list[Order]:
    """Other reserve providers (EUR/MW/h) and the system operator's requirement, bought at
    any price up to its cap."""
    rng = np.random.default_rng([seed, interval, 2])
    orders = [Order(f"res{g}", "supply", round(float(p), 2), round(float(q), 3)) for g, (p, q) in enumerate(
        zip(np.sort(rng.uniform(3, 25, n_providers)), rng.uniform(0.3, 1.2, n_providers)))]
    orders.append(Order("tso", "demand", 100.0, requirement_mw))
    return orders
