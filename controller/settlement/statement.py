"""Monthly statements: line items in integer cents, totals that balance to the cent.

Money is never a float here: energy is rounded to Wh, prices are Decimal EUR/MWh, each
line item is rounded half-even to a cent, and shared revenue is split by the largest-
remainder method so the parts add up exactly to the whole.
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, dataclass, field
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path


def cents(eur: Decimal) -> int:
    return int((eur * 100).quantize(Decimal(1), rounding=ROUND_HALF_EVEN))


def energy_cost_cents(kwh: float, price_eur_per_mwh: float) -> int:
    wh = Decimal(round(kwh * 1000))
    return cents(wh / Decimal(1_000_000) * Decimal(str(price_eur_per_mwh)))


def split_cents(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Largest-remainder split of `total` cents by weights; the parts sum to `total` exactly."""
    wsum = sum(weights.values())
    if wsum <= 0:
        return {k: 0 for k in weights}
    raw = {k: Decimal(total) * Decimal(str(w)) / Decimal(str(wsum)) for k, w in weights.items()}
    base = {k: int(v.to_integral_value(rounding="ROUND_FLOOR")) for k, v in raw.items()}
    rest = total - sum(base.values())
    for k in sorted(raw, key=lambda k: (raw[k] - base[k], k), reverse=True)[:rest]:
        base[k] += 1
    return base


@dataclass
class LineItem:
    participant: str
    time: str
    kind: str  # dr_payment | dr_penalty | market_payment | market_penalty
    reference: str  # event or award id
    energy_kwh: float
    amount_cents: int  # + paid to participant, - charged


@dataclass
class Statement:
    participant: str
    month: str
    items: list[LineItem] = field(default_factory=list)
    green_credits: int = 0
    credit_score_start: float = 0.0
    credit_score_end: float = 0.0

    @property
    def total_cents(self) -> int:
        return sum(i.amount_cents for i in self.items)

    def as_dict(self) -> dict:
        by_kind: dict[str, int] = {}
        for i in self.items:
            by_kind[i.kind] = by_kind.get(i.kind, 0) + i.amount_cents
        return {"participant": self.participant, "month": self.month, "total_cents": self.total_cents,
                "total_eur": f"{Decimal(self.total_cents) / 100:.2f}", "by_kind_cents": by_kind,
                "green_credits": self.green_credits, "credit_score_start": self.credit_score_start,
                "credit_score_end": self.credit_score_end, "items": len(self.items)}


def write_statements(statements: list[Statement], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for st in statements:
        with open(out / f"statement-{st.participant}-{st.month}.csv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(asdict(st.items[0]).keys()) if st.items else
                               ["participant", "time", "kind", "reference", "energy_kwh", "amount_cents"])
            w.writeheader()
            for item in st.items:
                w.writerow(asdict(item))
        (out / f"statement-{st.participant}-{st.month}.json").write_text(json.dumps(st.as_dict(), indent=1))
