"""One trading day: build the VPP's bids, clear every interval of both products against the
(synthetic or given) rest of the market, and book the awards into a `Position`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from controller.market.bids import (
    BidCurve,
    FlexibilityForecast,
    build_bids,
    synthetic_energy_market,
    synthetic_reserve_market,
)
from controller.market.clearing import ClearingResult, Order, clear
from controller.market.position import Position


@dataclass
class DayAheadResult:
    position: Position
    curves: list[BidCurve]
    energy: list[ClearingResult] = field(default_factory=list)
    reserve: list[ClearingResult] = field(default_factory=list)


def clear_day_ahead(flex: FlexibilityForecast, others_energy: Callable[[int], list[Order]],
                    others_reserve: Callable[[int], list[Order]], bidder: str = "vpp",
                    interval_s: float = 900.0, **bid_options) -> DayAheadResult:
    """`others_*(k)` give the rest of the market's orders for interval k."""
    curves = build_bids(flex, **bid_options)
    pos = Position(flex.n, interval_s)
    out = DayAheadResult(pos, curves)
    for k in range(flex.n):
        mine = [o for c in curves if c.interval == k and c.product == "energy" for o in c.orders(bidder)]
        res = clear(others_energy(k) + mine)
        out.energy.append(res)
        if res.price_eur_per_mwh is not None:
            pos.award_energy(k, res.awarded(bidder, "supply") * 1000, res.awarded(bidder, "demand") * 1000,
                             res.price_eur_per_mwh)
        mine = [o for c in curves if c.interval == k and c.product == "reserve" for o in c.orders(bidder)]
        res = clear(others_reserve(k) + mine)
        out.reserve.append(res)
        if res.price_eur_per_mwh is not None:
            pos.award_reserve(k, res.awarded(bidder, "supply") * 1000, res.price_eur_per_mwh)
    return out


def synthetic_day(flex: FlexibilityForecast, seed: int, demand_mw: float | np.ndarray = 30.0,
                  reserve_requirement_mw: float = 2.0, **bid_options) -> DayAheadResult:
    """Clear against seeded synthetic bidders (see bids.synthetic_*_market)."""
    demand = np.broadcast_to(np.asarray(demand_mw, float), (flex.n,))
    return clear_day_ahead(flex, lambda k: synthetic_energy_market(k, seed, float(demand[k])),
                           lambda k: synthetic_reserve_market(k, seed, reserve_requirement_mw), **bid_options)
