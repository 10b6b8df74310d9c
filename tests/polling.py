"""Polling for a condition with a deadline: the one wait the socket and service tests share."""

from __future__ import annotations

import time


def wait(pred, timeout_s: float = 30.0, step_s: float = 0.05) -> bool:
    """True as soon as `pred()` holds; after `timeout_s` of monotonic time, its last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(step_s)
    return bool(pred())
