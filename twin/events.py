"""The run's event log: discrete happenings (DR events, faults, violations, commands)."""

from __future__ import annotations

import json
import math
from datetime import timedelta


class EventLog:
    """Append-only list of events, each stamped with simulated UTC time; written as JSONL."""

    def __init__(self, start):
        self.start = start
        self.events: list[dict] = []

    def log(self, t_s: float, kind: str, **fields) -> dict:
        ev = {"time": (self.start + timedelta(seconds=float(t_s))).isoformat(), "t_s": float(t_s),
              "kind": kind, **fields}
        self.events.append(ev)
        return ev

    def of_kind(self, kind: str) -> list[dict]:
        return [e for e in self.events if e["kind"] == kind]

    def write(self, path) -> None:
        with open(path, "w") as f:
            f.writelines(json.dumps(finite(ev), default=str, allow_nan=False) + "\n" for ev in self.events)


def finite(obj):
    """obj with every non-finite float replaced by None (JSON has no NaN/Infinity)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy scalar
        return finite(obj.item())
    return obj
