"""The controller's sense of time: the wall clock in the field, a stepped clock under HIL.

The controller never reads time any other way, which is what lets the same code run
faster than real time in lockstep with the twin.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta, timezone


class Clock:
    """Seconds since the epoch (UTC) and a way to wait for a later instant."""

    def now(self) -> float:
        raise NotImplementedError

    def sleep_until(self, t: float, timeout_s: float | None = None) -> bool:
        """Block until now() >= t; False if the (wall) timeout ran out first."""
        raise NotImplementedError

    def utc(self) -> datetime:
        return datetime.fromtimestamp(self.now(), tz=timezone.utc)


class WallClock(Clock):
    def now(self) -> float:
        return time.time()

    def sleep_until(self, t: float, timeout_s: float | None = None) -> bool:
        wait = t - time.time()
        if timeout_s is not None and wait > timeout_s:
            time.sleep(max(timeout_s, 0))
            return False
        if wait > 0:
            time.sleep(wait)
        return True


class SteppedClock(Clock):
    """Time that moves only when `advance_to` is called (by the HIL coordinator)."""

    def __init__(self, start: datetime | float):
        self._t = start.timestamp() if isinstance(start, datetime) else float(start)
        self._cv = threading.Condition()

    def now(self) -> float:
        with self._cv:
            return self._t

    def advance_to(self, t: float) -> None:
        with self._cv:
            if t < self._t:
                raise ValueError(f"SteppedClock cannot go back ({t} < {self._t})")
            self._t = t
            self._cv.notify_all()

    def advance(self, dt_s: float) -> None:
        self.advance_to(self.now() + dt_s)

    def sleep_until(self, t: float, timeout_s: float | None = None) -> bool:
        with self._cv:
            return self._cv.wait_for(lambda: self._t >= t, timeout=timeout_s)


def iso(t: float) -> str:
    return (datetime(1970, 1, 1, tzinfo=timezone.utc) + timedelta(seconds=t)).isoformat()
