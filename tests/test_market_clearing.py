"""Uniform-price clearing against curves with known answers, and bids from flexibility."""

import numpy as np
import pytest

from controller.market.bids import build_bids
from controller.market.clearing import Order, clear
from controller.market.position import Position


def test_supply_marginal_sets_price():
    # supply: 10 MW @20, 10 MW @30, 10 MW @50; demand: 15 MW @100, 10 MW @40
    res = clear([Order("a", "supply", 20, 10), Order("b", "supply", 30, 10), Order("c", "supply", 50, 10),
                 Order("x", "demand", 100, 15), Order("y", "demand", 40, 10)])
    # 20 MW trade: a and b whole; demand x whole, y partly -> y is marginal
    assert res.quantity_mw == pytest.approx(20)
    assert res.price_eur_per_mwh == 40  # y is the partially accepted block -> demand sets price
    assert res.awarded("a") == pytest.approx(10) and res.awarded("b") == pytest.approx(10)
    assert res.awarded("c") == 0
    assert res.awarded("x", "demand") == pytest.approx(15) and res.awarded("y", "demand") == pytest.approx(5)


def test_partial_supply_block_sets_price():
    res = clear([Order("a", "supply", 20, 10), Order("b", "supply", 30, 10),
                 Order("x", "demand", 100, 15)])
    assert res.quantity_mw == pytest.approx(15) and res.price_eur_per_mwh == 30
    assert res.awarded("a") == pytest.approx(10) and res.awarded("b") == pytest.approx(5)


def test_ties_at_the_margin_share_pro_rata():
    res = clear([Order("a", "supply", 30, 10), Order("b", "supply", 30, 30),
                 Order("x", "demand", 100, 20)])
    assert res.price_eur_per_mwh == 30 and res.quantity_mw == pytest.approx(20)
    assert res.awarded("a") == pytest.approx(5) and res.awarded("b") == pytest.approx(15)


def test_no_crossing_no_trade():
    res = clear([Order("a", "supply", 80, 10), Order("x", "demand", 50, 10)])
    assert res.price_eur_per_mwh is None and res.quantity_mw == 0 and res.accepted == {}


def test_bids_conserve_flexibility_and_awards_become_targets():
    flex = np.array([0, 100, 400])
    curves = build_bids(flex, [40, 90], [0.5, 0.5], reserve_share=0.25)
    per_interval = {}
    for c in curves:
        per_interval.setdefault(c.interval, 0.0)
        per_interval[c.interval] += sum(q for _, q in c.steps)
    assert [per_interval[k] * 1000 for k in range(3)] == pytest.approx([0, 100, 400])
    pos = Position(3)
    res = clear([*[o for c in curves if c.interval == 2 and c.product == "energy" for o in c.orders("vpp")],
                 Order("load", "demand", 60, 10)])
    pos.award(2, res.awarded("vpp") * 1000, res.price_eur_per_mwh)
    assert pos.target_kw(2) == pytest.approx(150)  # only the 40 EUR step (half of 300 kW) clears at 60
    pos.deliver(2, 120)
    assert pos.summary()["short_kwh"] == pytest.approx(30 * 0.25)
