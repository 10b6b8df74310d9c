"""HTTP client for the controller API, as the dashboard uses it.

Every call returns a `Reply` and never raises: a dashboard that loses its controller must keep
drawing and say why (timeout, refused, 403, 404 "this controller does not offer it"). Paths live in
ENDPOINTS so the whole dashboard follows the API from one table.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import httpx

# logical name -> (method, path template); the controller API's routes (controller/api/)
ENDPOINTS: dict[str, tuple[str, str]] = {
    "whoami": ("GET", "/api/whoami"),
    "fleet": ("GET", "/api/fleet"),
    "grid": ("GET", "/api/grid"),
    "head": ("GET", "/api/head"),
    "schedule": ("GET", "/api/schedule"),
    "devices": ("GET", "/api/devices"),
    "dr_list": ("GET", "/api/dr/events"),
    "dr_create": ("POST", "/api/dr/events"),
    "dr_cancel": ("POST", "/api/dr/events/{event_id}/cancel"),
    "alarms": ("GET", "/api/alarms"),
    "alarm_ack": ("POST", "/api/alarms/{alarm_id}/ack"),
    "gate": ("GET", "/api/gate"),
    "emergency_shed": ("POST", "/api/emergency/shed"),
    "emergency_restore": ("POST", "/api/emergency/restore"),
    "out_of_service": ("POST", "/api/devices/{device_id}/out_of_service"),
    "audit": ("GET", "/api/audit"),
    "history": ("GET", "/api/history/{table}"),
}


@dataclass
class Reply:
    """Outcome of one API call: `data` when ok, else a one-line `error`."""

    ok: bool
    data: Any = None
    error: str = ""
    status: int | None = None
    ms: float = 0.0

    @property
    def missing(self) -> bool:
        """The API has no such endpoint (or the feature is switched off)."""
        return self.status in (404, 405, 501)


class ApiClient:
    """Bearer-token client with short timeouts; thread-safe (one pooled httpx.Client)."""

    def __init__(self, base_url: str, token: str | None = None, timeout_s: float = 2.0,
                 endpoints: dict[str, tuple[str, str]] | None = None):
        self.base_url = base_url.rstrip("/")
        self.endpoints = {**ENDPOINTS, **(endpoints or {})}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.base_url, headers=headers,
                                  timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 1.0)))
        self._lock = threading.Lock()
        self._role: str | None = None

    # -- plumbing ------------------------------------------------------------------------
    def call(self, name: str, json: dict | None = None, params: dict | None = None,
             **path_args) -> Reply:
        method, template = self.endpoints[name]
        path = template.format(**{k: _quote(v) for k, v in path_args.items()})
        t0 = time.perf_counter()
        try:
            r = self._http.request(method, path, json=json, params=params)
        except httpx.TimeoutException:
            return Reply(False, error=f"{method} {path}: timed out", ms=_ms(t0))
        except httpx.HTTPError as e:
            return Reply(False, error=f"{method} {path}: {type(e).__name__}: {e}", ms=_ms(t0))
        ms = _ms(t0)
        try:
            body = r.json() if r.content else None
        except ValueError:
            body = r.text[:200]
        if r.status_code >= 400:
            detail = body.get("detail") if isinstance(body, dict) else body
            if r.status_code in (404, 405, 501):
                detail = f"this controller does not offer it ({detail or r.reason_phrase})"
            return Reply(False, body, f"{method} {path}: HTTP {r.status_code}: {detail}",
                         r.status_code, ms)
        return Reply(True, body, status=r.status_code, ms=ms)

    def close(self) -> None:
        self._http.close()

    # -- reads ---------------------------------------------------------------------------
    def role(self, refresh: bool = False) -> str:
        """'viewer' | 'operator' | 'admin' | 'unknown' (no/invalid token, API down)."""
        with self._lock:
            if self._role is not None and not refresh:
                return self._role
        r = self.call("whoami")
        role = str(r.data.get("role", "unknown")) if r.ok and isinstance(r.data, dict) else "unknown"
        with self._lock:
            if r.ok:
                self._role = role
        return role

    def fleet(self) -> Reply:
        return self.call("fleet")

    def grid(self) -> Reply:
        return self.call("grid")

    def head(self, since_t: float | None = None) -> Reply:
        return self.call("head", params={} if since_t is None else {"since": since_t})

    def schedule(self) -> Reply:
        return self.call("schedule")

    def devices(self, offset: int = 0, limit: int = 20, only_unavailable: bool = False) -> Reply:
        params = {"offset": offset, "limit": limit}
        if only_unavailable:
            params["unavailable"] = "true"
        return self.call("devices", params=params)

    def dr_events(self) -> Reply:
        return self.call("dr_list")

    def alarms(self) -> Reply:
        return self.call("alarms")

    def gate(self) -> Reply:
        return self.call("gate")

    def dr_performance(self, since_t: float | None = None, limit: int = 500) -> Reply:
        """Per cycle and event: requested_kw, delivered_kw (the historian's dr_performance)."""
        params = {"limit": limit} if since_t is None else {"limit": limit, "since": since_t}
        return self.call("history", params=params, table="dr_performance")

    def audit(self, limit: int = 50) -> Reply:
        return self.call("audit", params={"limit": limit})

    # -- operator actions ----------------------------------------------------------------
    def create_dr_event(self, start_t: float, duration_s: float, reduction_kw: float,
                        groups: list[str] | None = None, event_id: str | None = None) -> Reply:
        body = {"start_t": start_t, "end_t": start_t + duration_s, "reduction_kw": reduction_kw}
        if groups:
            body["groups"] = groups
        if event_id:
            body["id"] = event_id
        return self.call("dr_create", json=body)

    def cancel_dr_event(self, event_id: str) -> Reply:
        return self.call("dr_cancel", event_id=event_id)

    def ack_alarm(self, alarm_id: str) -> Reply:
        return self.call("alarm_ack", alarm_id=alarm_id)

    def emergency_shed(self, reason: str = "operator") -> Reply:
        return self.call("emergency_shed", json={"reason": reason})

    def emergency_restore(self) -> Reply:
        return self.call("emergency_restore")

    def set_out_of_service(self, device_id: str, out: bool = True) -> Reply:
        return self.call("out_of_service", json={"in_service": not out}, device_id=device_id)


def _quote(v) -> str:
    from urllib.parse import quote

    return quote(str(v), safe="/")  # device ids are "group/index": the API routes {id:path}


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
