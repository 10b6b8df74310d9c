"""Settlement balances to the cent over a month; credit score follows its documented rule."""

from decimal import Decimal

import pytest

from controller.settlement import credit
from controller.settlement.month import PARTICIPANT_SHARE, simulate_month
from controller.settlement.statement import split_cents


@pytest.fixture(scope="module")
def month():
    return simulate_month(seed=3, n_participants=12, days=30)


def test_market_revenue_balances_to_the_cent(month):
    paid_market = sum(i.amount_cents for s in month.statements for i in s.items if i.kind == "market_payment")
    assert paid_market + month.vpp_fee_cents == month.market_revenue_cents
    assert month.vpp_fee_cents >= int((1 - PARTICIPANT_SHARE) * month.market_revenue_cents) - 1
    penalties = -sum(i.amount_cents for s in month.statements for i in s.items if i.kind == "market_penalty")
    assert penalties == month.imbalance_cents  # every imbalance cent is charged to someone


def test_statement_totals_are_the_sum_of_their_items(month):
    for s in month.statements:
        assert s.total_cents == sum(i.amount_cents for i in s.items)
        assert Decimal(s.as_dict()["total_eur"]) * 100 == s.total_cents
        assert all(isinstance(i.amount_cents, int) for i in s.items)
    assert month.market_revenue_cents > 0 and len(month.events) == 8


def test_split_cents_is_exact():
    for total in [0, 1, 99, 100001, 123456789]:
        parts = split_cents(total, {"a": 1 / 3, "b": 1 / 3, "c": 1 / 3, "d": 0.0001})
        assert sum(parts.values()) == total


def test_under_delivery_lowers_credit_by_the_rule():
    r = credit.reliability(requested_kwh=100, delivered_kwh=50, availability=1.0)
    assert r == 0.5
    assert credit.update_score(80.0, r) == 71.0  # 0.7 * 80 + 30 * 0.5
    assert credit.update_score(80.0, credit.reliability(100, 120)) == 86.0  # capped at 1
    assert credit.update_score(71.0, credit.reliability(100, 100, availability=0.5)) < 71.0


def test_unreliable_participants_end_lower_and_get_less(month):
    ends = {s.participant: s.credit_score_end for s in month.statements}
    # participants who dropped out mid-event (diligence 0.5) must rank below full deliverers
    lowest = min(ends, key=ends.get)
    highest = max(ends, key=ends.get)
    assert ends[lowest] < 60 < ends[highest]
    share = credit.allot(100.0, {lowest: 50.0, highest: 50.0}, ends)
    assert share[lowest] < share[highest] and sum(share.values()) == pytest.approx(100.0)
