"""Uniform-price double-auction clearing for one interval and one product.

Supply offers are sorted by ascending price, demand bids by descending price; the market
clears where the curves cross. The clearing price is the price of the marginal block
(the last accepted offer, or the demand bid when demand is the marginal side); blocks at
the marginal price are accepted pro rata, so ties are shared deterministically.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Order:
    bidder: str
    side: str  # "supply" | "demand"
    price_eur_per_mwh: float
    quantity_mw: float

    def __post_init__(self):
        if self.side not in ("supply", "demand"):
            raise ValueError(f"order side {self.side!r} must be 'supply' or 'demand'")
        if self.quantity_mw < 0:
            raise ValueError(f"order quantity {self.quantity_mw} MW must be >= 0")


@dataclass
class ClearingResult:
    price_eur_per_mwh: float | None
    quantity_mw: float
    accepted: dict[tuple[str, str], float]  # (bidder, side) -> accepted MW

    def awarded(self, bidder: str, side: str = "supply") -> float:
        return self.accepted.get((bidder, side), 0.0)


def clear(orders: list[Order], eps: float = 1e-9) -> ClearingResult:
    """Clear one interval. No crossing (cheapest supply above highest demand): no trade.

    Price rule: the partially accepted block sets the price (supply block when supply is
    marginal, demand bid when demand is); when both marginal blocks are taken whole, the
    last accepted supply offer sets it.
    """
    supply = sorted((o for o in orders if o.side == "supply" and o.quantity_mw > eps),
                    key=lambda o: (o.price_eur_per_mwh, o.bidder))
    demand = sorted((o for o in orders if o.side == "demand" and o.quantity_mw > eps),
                    key=lambda o: (-o.price_eur_per_mwh, o.bidder))
    i = j = 0
    s_left = supply[0].quantity_mw if supply else 0.0
    d_left = demand[0].quantity_mw if demand else 0.0
    traded = 0.0
    last_s = last_d = None
    while (i < len(supply) and j < len(demand)
           and demand[j].price_eur_per_mwh >= supply[i].price_eur_per_mwh - eps):
        q = min(s_left, d_left)
        traded += q
        s_left -= q
        d_left -= q
        last_s, last_d = supply[i], demand[j]
        s_partial, d_partial = s_left > eps, d_left > eps
        if not s_partial:
            i += 1
            s_left = supply[i].quantity_mw if i < len(supply) else 0.0
        if not d_partial:
            j += 1
            d_left = demand[j].quantity_mw if j < len(demand) else 0.0
    if traded <= eps:
        return ClearingResult(None, 0.0, {})
    if s_partial:
        price = last_s.price_eur_per_mwh
    elif d_partial:
        price = last_d.price_eur_per_mwh
    else:
        price = last_s.price_eur_per_mwh
    accepted: dict[tuple[str, str], float] = {}
    accepted.update(_allocate(supply, traded, price, side="supply", eps=eps))
    accepted.update(_allocate(demand, traded, price, side="demand", eps=eps))
    return ClearingResult(price, traded, accepted)


def _allocate(orders: list[Order], traded: float, price: float, side: str, eps: float):
    """Accept in merit order; blocks at the marginal price share what is left pro rata."""
    inside = (lambda o: o.price_eur_per_mwh < price - eps) if side == "supply" else \
        (lambda o: o.price_eur_per_mwh > price + eps)
    at = (lambda o: abs(o.price_eur_per_mwh - price) <= eps)
    out: dict[tuple[str, str], float] = {}
    left = traded
    for o in orders:
        if inside(o):
            q = min(o.quantity_mw, left)
            out[(o.bidder, side)] = out.get((o.bidder, side), 0.0) + q
            left -= q
    marginal = [o for o in orders if at(o)]
    total = sum(o.quantity_mw for o in marginal)
    for o in marginal:
        q = min(o.quantity_mw, left * o.quantity_mw / total) if total > eps else 0.0
        out[(o.bidder, side)] = out.get((o.bidder, side), 0.0) + q
    return {k: v for k, v in out.items() if v > eps}
