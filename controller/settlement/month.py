"""A synthetic month of VPP operation settled end to end, from a seed.

Per participant (device owner) a 15-min metered load series is generated for a lead-in of
history plus the month. Every day the VPP bids its flexibility day-ahead (energy up in the
morning peak, energy down at midday, reserve all day) against seeded synthetic bidders;
awards are allotted to participants by capacity x credit score and delivered with each
participant's own diligence. Every fourth day a DR event (18:00-20:00) is allotted the same
way. Delivery is always *measured*: metered load against a baseline computed from the meter
data alone, never from the generator's ground truth:
- DR events: controller.dr.baseline.ten_of_ten (5 same-day-type days, past event days
  excluded, capped morning adjustment);
- market awards (short blocks): the mean of the 4 intervals before each awarded block,
  held flat (the rule of dr.baseline.previous_intervals, in numpy over all participants).

Money (integer cents, see statement.py), per award interval:
- energy up: market pays price x min(fleet delivery, award); participants share
  PARTICIPANT_SHARE of it by their capped delivery, the VPP keeps the rest as its fee;
- energy down: the VPP pays price x award to the market; participants pay the same, split
  by the energy they absorbed (capped at their allotment), so the VPP neither gains nor loses;
- any fleet shortfall costs IMBALANCE_FACTOR x price per kWh, charged to the participants
  who fell short, split by their shortfall;
- reserve: the capacity payment is shared like energy-up revenue, by allotted capacity;
- DR: the program pays DR_PRICE per kWh delivered (capped at DR_CAP x request) and charges
  DR_PENALTY per kWh below DR_FLOOR x request; passed through in full.
So, to the cent: sum of all statements + VPP fee == market net cash + DR program net cash.

Ledger: one block per day (bids, awards, DR event, a telemetry digest per interval, credit
changes), then a settlement block the participants countersign; participants' public keys
are registered in the first block.

`gridtwin ledger month --out DIR` runs it; tests use `simulate_month` directly.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal

import numpy as np
import pandas as pd
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from controller.dr.baseline import ten_of_ten
from controller.ledger.chain import Ledger, LedgerEntry, canonical
from controller.market.bids import FlexibilityForecast
from controller.market.day_ahead import synthetic_day
from controller.security.keys import public_bytes
from controller.settlement import credit
from controller.settlement.statement import LineItem, Statement, energy_cost_cents, split_cents

DR_PRICE_EUR_PER_MWH = 300.0
DR_PENALTY_EUR_PER_MWH = 100.0
DR_CAP = 1.2  # paid DR delivery capped at 120 % of the request
DR_FLOOR = 0.9  # penalty below 90 % of the request
PARTICIPANT_SHARE = Decimal("0.8")  # of market revenue; the VPP keeps the rest as its fee
IMBALANCE_FACTOR = 1.5
N = 96  # 15-min intervals per day
STEP_H = 0.25
LEAD_IN_DAYS = 21
GREEN_KWH_PER_CREDIT = 1.0  # one green credit per whole kWh of delivered flexible energy
HOURS = np.arange(N) * STEP_H
UP_WINDOW = (HOURS >= 7) & (HOURS < 10)
DOWN_WINDOW = (HOURS >= 11) & (HOURS < 14)
DR_K0, DR_K1 = 72, 80  # 18:00-20:00


@dataclass
class MonthResult:
    statements: list[Statement]
    market_net_cents: int  # cash from (+) / to (-) the market
    dr_net_cents: int  # cash from the DR program
    vpp_fee_cents: int
    imbalance_cents: int
    events: list[dict] = field(default_factory=list)
    scores: dict[str, list[float]] = field(default_factory=dict)
    market: dict = field(default_factory=dict)  # fleet-level market figures

    def summary(self) -> dict:
        paid = sum(s.total_cents for s in self.statements)
        by_kind: dict[str, int] = {}
        for s in self.statements:
            for i in s.items:
                by_kind[i.kind] = by_kind.get(i.kind, 0) + i.amount_cents
        return {"participants": len(self.statements), "dr_events": len(self.events),
                "net_to_participants_eur": _eur(paid),
                "by_kind_eur": {k: _eur(v) for k, v in sorted(by_kind.items())},
                "market_net_eur": _eur(self.market_net_cents), "dr_program_net_eur": _eur(self.dr_net_cents),
                "vpp_fee_eur": _eur(self.vpp_fee_cents), "imbalance_charges_eur": _eur(self.imbalance_cents),
                "balances": paid + self.vpp_fee_cents == self.market_net_cents + self.dr_net_cents,
                **self.market,
                "green_credits": sum(s.green_credits for s in self.statements),
                "credit_score_min": float(min(s.credit_score_end for s in self.statements)),
                "credit_score_max": float(max(s.credit_score_end for s in self.statements))}


def _eur(c: int) -> str:
    return f"{Decimal(c) / 100:.2f}"


def _floor_share(cents: int) -> int:
    return int((Decimal(cents) * PARTICIPANT_SHARE).to_integral_value(rounding=ROUND_FLOOR))


def _interval_digest(names: list[str], kw: np.ndarray) -> str:
    """SHA-256 of the canonical JSON {participant: metered W} for one interval."""
    return hashlib.sha256(canonical({p: round(float(v) * 1000) for p, v in zip(names, kw)})).hexdigest()


def simulate_month(seed: int = 1, n_participants: int = 20, days: int = 30,
                   start: datetime = datetime(2026, 7, 1, tzinfo=UTC),
                   ledger: Ledger | None = None, participant_keys: dict | None = None,
                   diligence_of: dict[str, float] | None = None) -> MonthResult:
    """`diligence_of` overrides the seeded share of its allotment a participant delivers."""
    rng = np.random.default_rng(seed)
    names = [f"p{i:02d}" for i in range(n_participants)]
    cap = np.round(rng.uniform(20, 200, n_participants), 1)
    capacity_kw = dict(zip(names, cap))
    diligence = rng.choice([1.0, 0.95, 0.8, 0.5], n_participants, p=[.5, .25, .15, .1])
    for p, v in (diligence_of or {}).items():
        diligence[names.index(p)] = v
    score = {p: credit.INITIAL_SCORE for p in names}
    statements = {p: Statement(p, start.strftime("%Y-%m"), credit_score_start=score[p]) for p in names}
    scores = {p: [score[p]] for p in names}
    keys = participant_keys if participant_keys is not None else {p: Ed25519PrivateKey.generate() for p in names}

    # metered load (kW, load convention) for lead-in + month; delivery is applied day by day
    t0 = start - timedelta(days=LEAD_IN_DAYS)
    total_days = LEAD_IN_DAYS + days
    shape = 0.55 + 0.45 * np.exp(-((HOURS - 18.5) / 3.0) ** 2)
    weekday = np.array([(t0 + timedelta(days=d)).weekday() < 5 for d in range(total_days)])
    day_scale = np.where(weekday, 1.0, 0.85) * rng.uniform(0.95, 1.05, total_days)
    meter = (cap[:, None, None] * shape[None, None, :] * day_scale[None, :, None]
             * rng.uniform(0.97, 1.03, (n_participants, total_days, N))).reshape(n_participants, -1)
    index = pd.date_range(t0, periods=total_days * N, freq="15min")
    flex_up_kw, flex_down_kw, battery_kw = 0.3 * cap.sum(), 0.25 * cap.sum(), 0.15 * cap.sum()

    market_net = dr_net = vpp_fee = imbalance = 0
    sold_kwh = bought_kwh = reserve_mwh_h = 0.0
    events, event_days = [], []
    green_kwh = np.zeros(n_participants)  # flexible energy delivered, either direction
    for d in range(days):
        day = start + timedelta(days=d)
        off = (LEAD_IN_DAYS + d) * N
        entries: list[LedgerEntry] = []
        if d == 0:
            entries += [LedgerEntry("participant", f"participant-{p}", {
                "capacity_kw": float(capacity_kw[p]), "pubkey": public_bytes(keys[p]).hex()}, p, day.isoformat())
                for p in names]

        def t_of(k, day=day) -> str:
            return (day + timedelta(hours=float(HOURS[k]))).isoformat()

        # --- day-ahead market ---------------------------------------------------------------
        # load flexibility in its windows plus batteries' symmetric flexibility all day; energy
        # outside the windows is priced out (500 / 0 EUR/MWh) so only reserve is sold there
        flex = FlexibilityForecast(np.where(UP_WINDOW, flex_up_kw, 0.0) + battery_kw,
                                   np.where(DOWN_WINDOW, flex_down_kw, 0.0) + battery_kw,
                                   np.where(UP_WINDOW, 60.0, 500.0), np.where(DOWN_WINDOW, 35.0, 0.0),
                                   np.full(N, 0.05 * flex_up_kw), np.full(N, 0.05 * flex_down_kw))
        demand_mw = np.where(UP_WINDOW, 38.0, np.where(DOWN_WINDOW, 6.0, 25.0))
        da = synthetic_day(flex, seed * 1000 + d, demand_mw, reserve_requirement_mw=2.0, reserve_share=0.2)
        pos = da.position
        for c in da.curves:
            if c.quantity_mw > 0:
                entries.append(LedgerEntry("bid", f"bid-{day:%Y%m%d}-{c.interval:02d}-{c.product}-{c.side}",
                                           {"interval": c.interval, "product": c.product, "side": c.side,
                                            "steps": [[p, round(q, 6)] for p, q in c.steps]}, None, t_of(c.interval)))
        sold_kwh += pos.up_kw.sum() * STEP_H
        bought_kwh += pos.down_kw.sum() * STEP_H
        reserve_mwh_h += pos.reserve_kw.sum() / 1000 * STEP_H
        for k in np.flatnonzero((pos.up_kw > 0) | (pos.down_kw > 0) | (pos.reserve_kw > 0)):
            entries.append(LedgerEntry("award", f"award-{day:%Y%m%d}-{k:02d}", {
                "interval": int(k), "up_kw": round(float(pos.up_kw[k]), 3), "down_kw": round(float(pos.down_kw[k]), 3),
                "energy_price_eur_per_mwh": float(np.nan_to_num(pos.energy_price_eur_per_mwh[k])),
                "reserve_kw": round(float(pos.reserve_kw[k]), 3),
                "reserve_price_eur_per_mw_h": float(np.nan_to_num(pos.reserve_price_eur_per_mw_h[k]))},
                None, t_of(k)))

        # allot awards by capacity x credit score; participants deliver with their diligence
        w = np.array([capacity_kw[p] * score[p] / 100.0 for p in names])
        w = w / w.sum()
        target = pos.targets_kw()  # load convention: negative = reduce load
        share_kw = w[:, None] * target[None, :]  # per participant and interval
        dil = diligence[:, None] * rng.uniform(0.97, 1.03, (n_participants, N))
        meter[:, off:off + N] += share_kw * dil
        # measured market delivery against the 4-interval pre-block baseline
        requested_kwh = np.zeros(n_participants)
        delivered_kwh = np.zeros(n_participants)
        active = np.abs(target) > 0
        k = 0
        while k < N:
            if not active[k]:
                k += 1
                continue
            k_end = k
            while k_end < N and active[k_end] and np.sign(target[k_end]) == np.sign(target[k]):
                k_end += 1
            pre = [off + j for j in range(k - 1, -1, -1) if not active[j]][:4]  # never a delivered interval
            base = meter[:, pre].mean(axis=1)
            for kk in range(k, k_end):
                direction = -np.sign(target[kk])  # +1: up (reduce load), -1: down (absorb)
                meas = direction * (base - meter[:, off + kk])  # >0: delivered in the award's direction
                alloc = np.abs(share_kw[:, kk])
                capped = np.clip(meas, 0.0, alloc)
                requested_kwh += alloc * STEP_H
                delivered_kwh += capped * STEP_H
                fleet_kwh = min(float(np.clip(meas, 0, None).sum()), abs(target[kk])) * STEP_H
                price = float(pos.energy_price_eur_per_mwh[kk])
                aid = f"award-{day:%Y%m%d}-{kk:02d}"
                t = t_of(kk)
                short = np.clip(alloc - capped, 0.0, None)
                charge = energy_cost_cents(abs(target[kk]) * STEP_H - fleet_kwh, price * IMBALANCE_FACTOR)
                pen = split_cents(charge, dict(zip(names, short)))
                if direction > 0:
                    revenue = energy_cost_cents(fleet_kwh, price)
                    pool = _floor_share(revenue)
                    pay = split_cents(pool, dict(zip(names, capped)))
                    market_net += revenue - charge
                    vpp_fee += revenue - pool
                    kind = "market_payment"
                else:
                    cost = energy_cost_cents(abs(target[kk]) * STEP_H, price)
                    pay = {p: -v for p, v in split_cents(cost, dict(zip(names, capped if capped.sum() > 0
                                                                          else alloc))).items()}
                    market_net -= cost + charge
                    kind = "market_purchase"
                imbalance += charge
                for i, p in enumerate(names):
                    st = statements[p]
                    if pay[p]:
                        st.items.append(LineItem(p, t, kind, aid, round(float(capped[i]) * STEP_H, 3), pay[p]))
                    if pen[p]:
                        st.items.append(LineItem(p, t, "imbalance_charge", aid, round(float(short[i]) * STEP_H, 3),
                                                 -pen[p]))
                green_kwh[i] += capped[i] * STEP_H
            k = k_end
        for kk in np.flatnonzero(pos.reserve_kw > 0):
            revenue = energy_cost_cents(pos.reserve_kw[kk] * STEP_H, float(pos.reserve_price_eur_per_mw_h[kk]))
            pool = _floor_share(revenue)
            pay = split_cents(pool, dict(zip(names, w)))
            market_net += revenue
            vpp_fee += revenue - pool
            for p in names:
                if pay[p]:
                    statements[p].items.append(LineItem(p, t_of(kk), "reserve_payment", f"award-{day:%Y%m%d}-{kk:02d}",
                                                        0.0, pay[p]))
        if requested_kwh.sum() > 0:  # one credit update per participant for the day's awards
            for i, p in enumerate(names):
                if requested_kwh[i] > 0:
                    r = credit.reliability(requested_kwh[i], delivered_kwh[i])
                    old, score[p] = score[p], credit.update_score(score[p], r)
                    scores[p].append(score[p])
                    entries.append(LedgerEntry("credit_change", f"credit-market-{day:%Y%m%d}-{p}",
                                               {"reason": f"market awards {day:%Y-%m-%d}", "old": old,
                                                "new": score[p], "reliability": round(r, 4)}, p, day.isoformat()))

        # --- a DR event on every fourth day, 18:00-20:00 --------------------------------------
        if d % 4 == 1:
            ev_id = f"dr-{day:%Y%m%d}"
            request_kw = 0.25 * float(cap.sum())
            share = credit.allot(request_kw, capacity_kw, score)
            ev_start = day + timedelta(hours=18)
            entries.append(LedgerEntry("dr_event", ev_id, {"start": ev_start.isoformat(), "intervals": DR_K1 - DR_K0,
                                                           "request_kw": request_kw,
                                                           "allotment_kw": {p: round(v, 3) for p, v in share.items()}},
                                       None, day.isoformat()))
            events.append({"id": ev_id, "request_kw": request_kw})
            ev_end = ev_start + timedelta(hours=2)
            for i, p in enumerate(names):
                avail = np.ones(DR_K1 - DR_K0, dtype=bool)
                if diligence[i] < 0.6:
                    avail[rng.integers(0, DR_K1 - DR_K0):] = False  # devices drop out mid-event
                red = np.where(avail, share[p] * diligence[i] * rng.uniform(0.95, 1.05, DR_K1 - DR_K0), 0.0)
                meter[i, off + DR_K0:off + DR_K1] -= red
                series = pd.Series(meter[i, :off + N], index=index[:off + N])
                bl = ten_of_ten(series, ev_start, ev_end, days=5, lookback_days=LEAD_IN_DAYS + d,
                                exclude_dates=event_days)
                got_kwh = float(np.sum(bl.kw - meter[i, off + DR_K0:off + DR_K1]) * STEP_H)
                req_kwh = share[p] * (DR_K1 - DR_K0) * STEP_H
                st = statements[p]
                paid_kwh = min(max(got_kwh, 0.0), DR_CAP * req_kwh)
                amount = energy_cost_cents(paid_kwh, DR_PRICE_EUR_PER_MWH)
                st.items.append(LineItem(p, ev_start.isoformat(), "dr_payment", ev_id, round(paid_kwh, 3), amount))
                dr_net += amount
                short = DR_FLOOR * req_kwh - max(got_kwh, 0.0)
                if short > 0:
                    pen = energy_cost_cents(short, DR_PENALTY_EUR_PER_MWH)
                    st.items.append(LineItem(p, ev_start.isoformat(), "dr_penalty", ev_id, round(short, 3), -pen))
                    dr_net -= pen
                green_kwh[i] += max(got_kwh, 0.0)
                r = credit.reliability(req_kwh, got_kwh, float(avail.mean()))
                old, score[p] = score[p], credit.update_score(score[p], r)
                scores[p].append(score[p])
                entries.append(LedgerEntry("credit_change", f"credit-{ev_id}-{p}",
                                           {"reason": ev_id, "old": old, "new": score[p], "reliability": round(r, 4),
                                            "baseline_kwh": round(float(bl.kw.sum() * STEP_H), 3),
                                            "requested_kwh": round(req_kwh, 3), "delivered_kwh": round(got_kwh, 3),
                                            "availability": float(avail.mean())}, p, ev_end.isoformat()))
            event_days.append(day.date())

        for k in range(N):
            kw = meter[:, off + k]
            entries.append(LedgerEntry("telemetry_digest", f"tm-{day:%Y%m%d}-{k:02d}",
                                       {"interval": k, "participants": n_participants,
                                        "sha256": _interval_digest(names, kw), "sum_kw": round(float(kw.sum()), 3)},
                                       None, t_of(k)))
        if ledger is not None:
            ledger.append_block(entries, time=(day + timedelta(days=1)).isoformat())
    for i, p in enumerate(names):
        statements[p].credit_score_end = score[p]
        statements[p].green_credits = int(green_kwh[i] // GREEN_KWH_PER_CREDIT)
    if ledger is not None:
        end = (start + timedelta(days=days)).isoformat()
        h = ledger.append_block([LedgerEntry("settlement", f"settlement-{start:%Y%m}-{p}", statements[p].as_dict(),
                                             p, end) for p in names], time=end)
        for p in names:
            ledger.countersign(h, p, keys[p])
    market = {"sold_mwh": round(sold_kwh / 1000, 3), "bought_mwh": round(bought_kwh / 1000, 3),
              "reserve_mw_h": round(reserve_mwh_h, 3)}
    return MonthResult(list(statements.values()), market_net, dr_net, vpp_fee, imbalance, events, scores, market)


def dumps(result: MonthResult) -> str:
    return json.dumps(result.summary(), indent=1)
