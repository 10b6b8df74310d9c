"""Operator command source: setpoints an operator sent through the API, each sent once (the
cycle carries a ramp-limited one on to its target)."""

from __future__ import annotations

import threading

from controller.commands import Command


class OperatorSource:
    name, priority = "operator", 1

    def __init__(self):
        self.pending: list[Command] = []
        self._lock = threading.Lock()

    def add(self, cmd: Command) -> None:
        with self._lock:
            self.pending.append(cmd)

    def commands(self, t: float, state) -> list[Command]:
        with self._lock:
            out, self.pending = self.pending, []
        return out
