"""Credit score per participant from delivery reliability, and event allotment by score.

Rule (documented, tested): scores live in [0, 100] and start at 80. After every DR event or
market award a participant was allotted, with reliability
    r = min(delivered_kwh / requested_kwh, 1) * availability
(availability: share of the event's intervals the participant's devices answered), the
score becomes  round(0.7 * score + 30 * r, 2).  Full delivery pulls it towards 100; delivering
half of a request at full availability from 80 gives 0.7*80 + 15 = 71.
Allotment of a future event: proportional to capacity_kw * score / 100.
"""

from __future__ import annotations

INITIAL_SCORE = 80.0
MEMORY = 0.7
GAIN = 30.0


def reliability(requested_kwh: float, delivered_kwh: float, availability: float = 1.0) -> float:
    if requested_kwh <= 0:
        raise ValueError("reliability needs a positive requested energy")
    return max(0.0, min(delivered_kwh / requested_kwh, 1.0)) * max(0.0, min(availability, 1.0))


def update_score(score: float, r: float) -> float:
    return round(min(100.0, max(0.0, MEMORY * score + GAIN * r)), 2)


def allot(request_kw: float, capacity_kw: dict[str, float], score: dict[str, float]) -> dict[str, float]:
    """Split a request over participants by capacity weighted with credit score."""
    w = {p: capacity_kw[p] * score.get(p, INITIAL_SCORE) / 100.0 for p in capacity_kw}
    total = sum(w.values())
    return {p: (request_kw * v / total if total > 0 else 0.0) for p, v in w.items()}
