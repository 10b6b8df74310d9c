"""Settlement balances to the cent over a month; credit score follows its documented rule."""

import csv
import json
from decimal import Decimal

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.ledger.chain import Ledger
from controller.settlement import credit
from controller.settlement.month import PARTICIPANT_SHARE, simulate_month
from controller.settlement.statement import split_cents, write_statements


@pytest.fixture(scope="module")
def month():
    return simulate_month(seed=3, n_participants=12, days=30)


def test_every_cent_is_accounted_for(month):
    """Statements + VPP fee == cash from the market + cash from the DR program, exactly."""
    paid = sum(s.total_cents for s in month.statements)
    assert paid + month.vpp_fee_cents == month.market_net_cents + month.dr_net_cents
    assert month.summary()["balances"] is True
    items = [i for s in month.statements for i in s.items]
    assert all(isinstance(i.amount_cents, int) for i in items)
    # the imbalance the market charged is exactly what short participants were charged
    assert -sum(i.amount_cents for i in items if i.kind == "imbalance_charge") == month.imbalance_cents
    # the VPP fee is the floor of (1 - share) of each revenue line: within a cent per line
    revenue_lines = len({i.reference for i in items if i.kind in ("market_payment", "reserve_payment")})
    fee_floor = (1 - PARTICIPANT_SHARE) * sum(i.amount_cents for i in items
                                              if i.kind in ("market_payment", "reserve_payment")) / PARTICIPANT_SHARE
    assert fee_floor <= month.vpp_fee_cents <= fee_floor + revenue_lines + 1
    kinds = {i.kind for i in items}
    assert {"market_payment", "market_purchase", "reserve_payment", "dr_payment"} <= kinds


def test_statement_totals_are_the_sum_of_their_items(month, tmp_path):
    write_statements(month.statements, tmp_path)
    for s in month.statements:
        d = json.loads((tmp_path / f"statement-{s.participant}-{s.month}.json").read_text())
        with open(tmp_path / f"statement-{s.participant}-{s.month}.csv") as f:
            rows = list(csv.DictReader(f))
        assert sum(int(r["amount_cents"]) for r in rows) == d["total_cents"] == s.total_cents
        assert Decimal(d["total_eur"]) * 100 == s.total_cents
        assert sum(d["by_kind_cents"].values()) == s.total_cents
    assert len(month.events) == 8


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


def test_under_delivered_dr_event_lowers_the_score_by_the_rule(tmp_path):
    """p03 delivers half its DR allotment (and drops out mid-event); its score after each
    event follows new = round(0.7 old + 30 r, 2) with r from the measured delivery."""
    key = Ed25519PrivateKey.generate()
    led = Ledger(tmp_path / "l.sqlite", key)
    simulate_month(seed=5, n_participants=6, days=4, ledger=led, diligence_of={"p03": 0.5, "p01": 1.0})
    dr = [e for e in led.entries("credit_change") if e["payload"]["reason"].startswith("dr-")]
    assert len(dr) == 6  # one event (day 1), six participants
    by_p = {e["participant"]: e["payload"] for e in dr}
    for pl in by_p.values():
        r = min(max(pl["delivered_kwh"], 0) / pl["requested_kwh"], 1) * pl["availability"]
        assert pl["reliability"] == pytest.approx(r, abs=1e-3)
        assert pl["new"] == pytest.approx(credit.update_score(pl["old"], pl["reliability"]), abs=0.011)
    bad, good = by_p["p03"], by_p["p01"]
    assert bad["delivered_kwh"] < 0.6 * bad["requested_kwh"] and bad["reliability"] < 0.6
    assert bad["new"] < bad["old"]  # r < old / 100: the score falls
    assert good["reliability"] > 0.9 and good["new"] > bad["new"]
    led.close()
