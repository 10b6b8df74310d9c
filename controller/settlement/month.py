"""A simulated month of VPP operation settled end to end: metered 15-min delivery of
participants, DR events allotted by credit score, day-ahead market awards cleared against
synthetic bidders, statements in cents, credit scores, green credits, and a ledger block a day.

`gridtwin ledger month --out DIR` runs it; tests use `simulate_month` directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import numpy as np

from controller.ledger.chain import Ledger, LedgerEntry
from controller.market.bids import build_bids, synthetic_market
from controller.market.clearing import clear
from controller.settlement import credit
from controller.settlement.statement import LineItem, Statement, energy_cost_cents, split_cents

DR_PRICE_EUR_PER_MWH = 300.0
DR_PENALTY_EUR_PER_MWH = 100.0
DR_CAP = 1.2  # paid delivery capped at 120% of request
DR_FLOOR = 0.9  # penalty below 90% of request
PARTICIPANT_SHARE = Decimal("0.8")  # of market revenue; the VPP keeps the rest as its fee
IMBALANCE_FACTOR = 1.5
STEP_H = 0.25


@dataclass
class MonthResult:
    statements: list[Statement]
    market_revenue_cents: int
    vpp_fee_cents: int
    imbalance_cents: int
    events: list[dict] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)

    def summary(self) -> dict:
        paid = sum(s.total_cents for s in self.statements)
        return {"participants": len(self.statements), "dr_events": len(self.events),
                "paid_to_participants_eur": f"{Decimal(paid) / 100:.2f}",
                "market_revenue_eur": f"{Decimal(self.market_revenue_cents) / 100:.2f}",
                "vpp_fee_eur": f"{Decimal(self.vpp_fee_cents) / 100:.2f}",
                "imbalance_charges_eur": f"{Decimal(self.imbalance_cents) / 100:.2f}",
                "green_credits": sum(s.green_credits for s in self.statements),
                "credit_score_min": float(min(s.credit_score_end for s in self.statements)),
                "credit_score_max": float(max(s.credit_score_end for s in self.statements))}


def _digest(arr: np.ndarray) -> str:
    return hashlib.sha256(np.round(arr, 3).astype("<f8").tobytes()).hexdigest()


def simulate_month(seed: int = 1, n_participants: int = 20, days: int = 30,
                   start: datetime = datetime(2026, 7, 1, tzinfo=UTC),
                   ledger: Ledger | None = None) -> MonthResult:
    rng = np.random.default_rng(seed)
    names = [f"p{i:02d}" for i in range(n_participants)]
    capacity_kw = dict(zip(names, np.round(rng.uniform(20, 200, n_participants), 1)))
    diligence = dict(zip(names, rng.choice([1.0, 0.95, 0.8, 0.5], n_participants, p=[.5, .25, .15, .1])))
    score = {p: credit.INITIAL_SCORE for p in names}
    statements = {p: Statement(p, start.strftime("%Y-%m"), credit_score_start=score[p]) for p in names}
    scores = {p: [score[p]] for p in names}
    hours = np.arange(96) * STEP_H
    shape = 0.55 + 0.45 * np.exp(-((hours - 18.5) / 3.0) ** 2)
    market_rev = vpp_fee = imbalance = 0
    events = []
    for d in range(days):
        day = start + timedelta(days=d)
        entries: list[LedgerEntry] = []
        base = {p: capacity_kw[p] * shape * rng.uniform(0.9, 1.1, 96) for p in names}
        metered = {p: base[p].copy() for p in names}
        # --- day-ahead market: the VPP offers 30% of capacity 17:00-21:00 -----------------
        up_flex = np.where((hours >= 17) & (hours < 21), 0.3 * sum(capacity_kw.values()), 0.0)
        curves = build_bids(up_flex, [40.0, 90.0], [0.5, 0.5])
        for c in curves:
            if c.product != "energy" or not any(q for _, q in c.steps):
                continue
            res = clear(synthetic_market(c.interval, seed * 1000 + d, demand_mw=30.0) + c.orders("vpp"))
            award_kw = res.awarded("vpp") * 1000.0
            if award_kw <= 0:
                continue
            k = c.interval
            t = (day + timedelta(hours=hours[k])).isoformat()
            award_id = f"award-{day:%Y%m%d}-{k:02d}"
            entries.append(LedgerEntry("bid", f"bid-{day:%Y%m%d}-{k:02d}",
                                       {"interval": k, "steps": c.steps}, None, t))
            entries.append(LedgerEntry("award", award_id, {"interval": k, "award_kw": award_kw,
                                                           "price_eur_per_mwh": res.price_eur_per_mwh}, None, t))
            share = credit.allot(award_kw, capacity_kw, score)
            delivered = {p: share[p] * diligence[p] * rng.uniform(0.97, 1.03) for p in names}
            for p in names:
                metered[p][k] -= delivered[p]
            awarded_kwh = award_kw * STEP_H
            delivered_kwh = min(sum(delivered.values()) * STEP_H, awarded_kwh)
            revenue = energy_cost_cents(delivered_kwh, res.price_eur_per_mwh)
            short_kwh = awarded_kwh - delivered_kwh
            charge = energy_cost_cents(short_kwh, res.price_eur_per_mwh * IMBALANCE_FACTOR)
            market_rev += revenue
            imbalance += charge
            pool = int((Decimal(revenue) * PARTICIPANT_SHARE).to_integral_value(rounding="ROUND_FLOOR"))
            vpp_fee += revenue - pool
            pay = split_cents(pool, {p: delivered[p] for p in names})
            pen = split_cents(charge, {p: max(share[p] - delivered[p], 0.0) for p in names})
            for p in names:
                st = statements[p]
                st.items.append(LineItem(p, t, "market_payment", award_id, round(delivered[p] * STEP_H, 3), pay[p]))
                if pen[p]:
                    st.items.append(LineItem(p, t, "market_penalty", award_id,
                                             round(max(share[p] - delivered[p], 0) * STEP_H, 3), -pen[p]))
                st.green_credits += int(round(delivered[p] * STEP_H))
        # --- a DR event on every fourth day, 18:00-20:00 -------------------------------------
        if d % 4 == 1:
            ev_id = f"dr-{day:%Y%m%d}"
            k0, k1 = 72, 80
            request_kw = 0.25 * sum(capacity_kw.values())
            share = credit.allot(request_kw, capacity_kw, score)
            entries.append(LedgerEntry("dr_event", ev_id, {"start": (day + timedelta(hours=18)).isoformat(),
                                                           "intervals": k1 - k0, "request_kw": request_kw,
                                                           "allotment_kw": share}, None, day.isoformat()))
            events.append({"id": ev_id, "request_kw": request_kw})
            for p in names:
                avail = np.ones(k1 - k0, dtype=bool)
                if diligence[p] < 0.6:
                    avail[rng.integers(0, k1 - k0):] = False  # devices drop out mid-event
                red = np.where(avail, share[p] * diligence[p] * rng.uniform(0.95, 1.05, k1 - k0), 0.0)
                metered[p][k0:k1] -= red
                delivered_kwh = float(np.sum(base[p][k0:k1] - metered[p][k0:k1]) * STEP_H)
                requested_kwh = share[p] * (k1 - k0) * STEP_H
                st = statements[p]
                paid_kwh = min(max(delivered_kwh, 0.0), DR_CAP * requested_kwh)
                amount = energy_cost_cents(paid_kwh, DR_PRICE_EUR_PER_MWH)
                st.items.append(LineItem(p, day.isoformat(), "dr_payment", ev_id, round(paid_kwh, 3), amount))
                short = DR_FLOOR * requested_kwh - max(delivered_kwh, 0.0)
                if short > 0:
                    st.items.append(LineItem(p, day.isoformat(), "dr_penalty", ev_id, round(short, 3),
                                             -energy_cost_cents(short, DR_PENALTY_EUR_PER_MWH)))
                st.green_credits += int(round(max(delivered_kwh, 0.0)))
                r = credit.reliability(requested_kwh, delivered_kwh, float(avail.mean()))
                old, score[p] = score[p], credit.update_score(score[p], r)
                scores[p].append(score[p])
                entries.append(LedgerEntry("credit_change", f"credit-{ev_id}-{p}",
                                           {"event": ev_id, "old": old, "new": score[p], "reliability": round(r, 4)},
                                           p, day.isoformat()))
        for p in names:
            entries.append(LedgerEntry("telemetry_digest", f"tm-{day:%Y%m%d}-{p}",
                                       {"intervals": 96, "sha256": _digest(metered[p]),
                                        "energy_kwh": round(float(metered[p].sum() * STEP_H), 3)}, p, day.isoformat()))
        if ledger is not None:
            ledger.append_block(entries, time=(day + timedelta(days=1)).isoformat())
    for p in names:
        statements[p].credit_score_end = score[p]
    if ledger is not None:
        ledger.append_block([LedgerEntry("settlement", f"settlement-{start:%Y%m}-{p}",
                                         statements[p].as_dict(), p, (start + timedelta(days=days)).isoformat())
                             for p in names], time=(start + timedelta(days=days)).isoformat())
    return MonthResult(list(statements.values()), market_rev, vpp_fee, imbalance, events, scores)


def dumps(result: MonthResult) -> str:
    return json.dumps(result.summary(), indent=1)
