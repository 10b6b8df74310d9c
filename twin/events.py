"""The run's event log: discrete happenings (DR events, faults, violations, commands)."""

from __future__ import annotations

import json
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
            f.writelines(json.dumps(ev, default=str) + "\n" for ev in self.events)
