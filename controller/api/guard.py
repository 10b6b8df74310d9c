"""Request guards of the API: a body-size limit (ASGI middleware, counts streamed bodies too)
and the rate-limited audit of refused requests (401/403), so a flood of bad tokens is seen
in the audit trail without being able to fill the disk."""

from __future__ import annotations

import asyncio
import threading
import time

from starlette.responses import JSONResponse

SAFE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"  # DR event ids, group names
DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}(/[A-Za-z0-9_.:-]{1,63}){0,3}$"
INT64_MAX = 2**63 - 1


class BodyLimit:
    """413 for a request body above `max_bytes` (declared or streamed)."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length":
                try:
                    too_big = int(v) > self.max_bytes
                except ValueError:
                    too_big = True
                if too_big:
                    return await self._refuse(scope, receive, send)
        seen = 0
        limit = self.max_bytes

        async def counted():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > limit:
                    raise _TooLarge
            return msg

        try:
            return await self.app(scope, counted, send)
        except _TooLarge:
            return await self._refuse(scope, receive, send)

    async def _refuse(self, scope, receive, send):
        r = JSONResponse({"detail": f"request body larger than {self.max_bytes} bytes"}, 413)
        await r(scope, receive, send)


class _TooLarge(Exception):
    pass


class CycleFirst:
    """While the control cycle runs (it holds the controller's lock for a few ms), requests
    wait on the event loop before they start, so the cycle has the interpreter to itself;
    the emergency endpoints never wait. Bounded: after `max_wait_s` a request goes ahead."""

    def __init__(self, app, busy, max_wait_s: float = 2.0):
        self.app, self.busy, self.max_wait_s = app, busy, max_wait_s

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and not scope.get("path", "").startswith("/api/emergency/"):
            waited = 0.0
            while waited < self.max_wait_s and self.busy():
                await asyncio.sleep(0.001)
                waited += 0.001
        return await self.app(scope, receive, send)


class DeniedAudit:
    """Writes an audit row for each refused request, at most `per_min` a minute; the rest are
    counted and summed up in one row when the minute turns."""

    def __init__(self, hist, clock, per_min: int, counter=None):
        self.hist, self.clock, self.per_min, self.counter = hist, clock, per_min, counter
        self._lock = threading.Lock()
        self._window = int(time.monotonic() // 60)
        self._written = self._dropped = 0

    def __call__(self, code: int, user: str, role: str, action: str, why: str, client: str) -> None:
        if self.counter is not None:
            self.counter.labels(str(code)).inc()
        with self._lock:
            w = int(time.monotonic() // 60)
            if w != self._window:
                if self._dropped:
                    self.hist.audit(self.clock.now(), "", "", "denied_suppressed", "",
                                    {"count": self._dropped}, ok=False)
                self._window, self._written, self._dropped = w, 0, 0
            if self._written >= self.per_min:
                self._dropped += 1
                return
            self._written += 1
        self.hist.audit(self.clock.now(), user, role, action, "",
                        {"denied": why, "status": code, "client": client}, ok=False)
