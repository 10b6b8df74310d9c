"""Uniform-price clearing against curves with known answers, and bids from flexibility."""

import numpy as np
import pytest

from controller.market.bids import FlexibilityForecast, build_bids
from controller.market.clearing import Order, clear
from controller.market.day_ahead import clear_day_ahead, synthetic_day


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


def test_demand_ties_share_pro_rata_and_order_does_not_matter():
    orders = [Order("s", "supply", 10, 12), Order("x", "demand", 50, 10), Order("y", "demand", 50, 20)]
    res = clear(orders)
    assert res.price_eur_per_mwh == 50 and res.quantity_mw == pytest.approx(12)
    assert res.awarded("x", "demand") == pytest.approx(4) and res.awarded("y", "demand") == pytest.approx(8)
    assert clear(orders[::-1]).accepted == res.accepted


def _flex(up, down, mc=50.0, dv=20.0, sigma=0.0):
    n = len(up)
    return FlexibilityForecast(np.array(up, float), np.array(down, float), np.full(n, mc), np.full(n, dv),
                               np.full(n, sigma), np.full(n, sigma))


def test_bids_hold_back_forecast_error_and_reserve():
    curves = build_bids(_flex([0, 100, 400], [0, 300, 50], sigma=20.0), reserve_share=0.25)
    got = {(c.interval, c.product, c.side): c.quantity_mw * 1000 for c in curves}
    # firm = forecast - 1 sigma; reserve = 25 % of the firm flexibility both directions have
    assert got[(1, "reserve", "supply")] == pytest.approx(0.25 * 80)
    assert got[(1, "energy", "supply")] == pytest.approx(80 - 20)
    assert got[(1, "energy", "demand")] == pytest.approx(280 - 20)
    assert got[(2, "reserve", "supply")] == pytest.approx(0.25 * 30)
    assert got[(2, "energy", "supply")] == pytest.approx(380 - 7.5)
    assert got[(0, "energy", "supply")] == got[(0, "reserve", "supply")] == 0
    steps = next(c.steps for c in curves if (c.interval, c.side) == (2, "supply"))
    assert [p for p, _ in steps] == [50.0, 75.0]  # marginal cost x tier factors
    with pytest.raises(ValueError, match="trade with itself"):
        _flex([1], [1], mc=30.0, dv=30.0)


def test_awards_become_targets_with_known_prices():
    """Hand-built market: interval 0 is expensive (the VPP's cheap up step clears, the
    dearer one does not), interval 1 is cheap (the VPP buys with its down bid)."""
    flex = _flex([400, 400], [400, 400], mc=50.0, dv=20.0)  # up steps 160 kW @50, 160 kW @75

    def energy(k):
        if k == 0:  # demand 1 MW @ 1000; supply 0.9 MW @ 30, 5 MW @ 60
            return [Order("load", "demand", 1000, 1.0), Order("g1", "supply", 30, 0.9), Order("g2", "supply", 60, 5)]
        # interval 1: 0.5 MW demand; cheap supply 2 MW @ 5 -> price 20 set by the VPP's down bid
        return [Order("load", "demand", 1000, 0.5), Order("g1", "supply", 5, 2.0)]

    def reserve(k):  # requirement 0.1 MW; VPP offers 80 kW @ 8, a rival 1 MW @ 12
        return [Order("tso", "demand", 100, 0.1), Order("r1", "supply", 12, 1.0)]

    day = clear_day_ahead(flex, energy, reserve, reserve_share=0.2, reserve_price_eur_per_mw_h=8.0)
    pos = day.position
    # interval 0: 0.9 MW @30 + VPP 0.15 MW @50 covers 1 MW -> the VPP's step is marginal, price 50
    assert day.energy[0].price_eur_per_mwh == 50 and pos.up_kw[0] == pytest.approx(100)
    # interval 1: supply 2 MW @5; demand 0.5 MW @1000 then VPP 160 kW @20, 160 kW @13.33
    assert day.energy[1].price_eur_per_mwh == 5 and pos.down_kw[1] == pytest.approx(320)
    assert pos.targets_kw() == pytest.approx([-100, 320])
    assert pos.reserve_kw == pytest.approx([80, 80]) and day.reserve[0].price_eur_per_mwh == 12
    pos.deliver(0, -90.0)  # 10 kW short of the 100 kW reduction
    s = pos.summary()
    assert s["short_kwh"] == pytest.approx(2.5) and s["settled_intervals"] == 1
    assert s["remaining_target_kwh"] == pytest.approx(80)
    assert s["energy_revenue_eur"] == pytest.approx((100 * 50 - 320 * 5) / 1000 * 0.25)


def test_synthetic_day_is_deterministic_and_respects_offers():
    n = 96
    hours = np.arange(n) / 4
    flex = _flex(np.where(hours >= 17, 500.0, 100.0), np.full(n, 200.0), mc=60.0, dv=25.0, sigma=10.0)
    a, b = synthetic_day(flex, seed=7), synthetic_day(flex, seed=7)
    assert np.array_equal(a.position.targets_kw(), b.position.targets_kw())
    offered_up = np.array([sum(c.quantity_mw for c in a.curves if c.interval == k and c.side == "supply"
                               and c.product == "energy") for k in range(n)]) * 1000
    assert np.all(a.position.up_kw <= offered_up + 1e-9)
    assert np.all((a.position.up_kw == 0) | (a.position.down_kw == 0))  # never both ways at once
    for k, res in enumerate(a.energy):  # uniform price: every VPP up award is at or below the price
        if a.position.up_kw[k] > 0:
            assert res.price_eur_per_mwh >= 60.0
    assert a.position.up_kw.sum() > 0
