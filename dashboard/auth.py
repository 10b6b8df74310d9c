"""Dashboard login: user + token checked against the controller (GET /api/whoami), a server-side
session behind an HttpOnly cookie, logout and expiry.

One dashboard process serves many users: each session keeps its own ApiClient (the user's
token), so every action the API audits is audited under the logged-in user, never under a
token given on the dashboard's command line.
"""

from __future__ import annotations

import html
import secrets
import threading
import time
from dataclasses import dataclass, field

from dashboard.api_client import ApiClient

COOKIE = "gridtwin_session"
OPEN_PATHS = ("/login", "/logout", "/_dash-component-suites/", "/assets/", "/_favicon.ico", "/favicon.ico")


@dataclass
class Session:
    user: str
    role: str
    client: ApiClient
    expires_at: float
    created_at: float = field(default_factory=time.time)


class SessionStore:
    """Sessions by random id, each with an absolute lifetime of `ttl_s` (re-login after)."""

    def __init__(self, api_url: str, ttl_s: float = 8 * 3600.0):
        self.api_url, self.ttl_s = api_url, ttl_s
        self._by_id: dict[str, Session] = {}
        self._lock = threading.Lock()

    def login(self, user: str, token: str) -> tuple[str | None, str]:
        """(session id, "") when the controller knows this token as this user, else (None, why)."""
        user, token = (user or "").strip(), (token or "").strip()
        if not user or not token:
            return None, "give your user name and token"
        client = ApiClient(self.api_url, token)
        r = client.call("whoami")
        if not r.ok:
            client.close()
            if r.status in (401, 403):
                return None, "unknown user or token"
            return None, f"controller not reachable: {r.error}"
        if not isinstance(r.data, dict) or r.data.get("user") != user:
            client.close()
            return None, "unknown user or token"  # never say which of the two was wrong
        client._role = str(r.data.get("role", "viewer"))
        sid = secrets.token_urlsafe(32)
        with self._lock:
            self._purge()
            self._by_id[sid] = Session(user, client._role, client, time.time() + self.ttl_s)
        return sid, ""

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
            if s is not None and s.expires_at <= time.time():
                self._by_id.pop(sid).client.close()
                return None
            return s

    def logout(self, sid: str | None) -> None:
        with self._lock:
            s = self._by_id.pop(sid or "", None)
        if s is not None:
            s.client.close()

    def _purge(self) -> None:
        now = time.time()
        for k in [k for k, s in self._by_id.items() if s.expires_at <= now]:
            self._by_id.pop(k).client.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._by_id)


def current(store: SessionStore) -> Session | None:
    """The session of the Flask request being served (Dash callbacks run inside one)."""
    from flask import request

    return store.get(request.cookies.get(COOKIE))


LOGIN_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>gridtwin · sign in</title>
<style>body{{font-family:sans-serif;margin:60px auto;max-width:380px;color:#222}}
label{{display:block;margin:10px 0 2px}} input{{width:100%;padding:6px;box-sizing:border-box}}
button{{margin-top:14px;padding:6px 18px}} .err{{color:#b00;margin:10px 0}} .note{{color:#666;font-size:12px}}</style>
</head><body><h2>gridtwin operator dashboard</h2>
<p class="note">Sign in with your user name and the API token the controller's tokens file gives you
(see <code>gridtwin controller init</code>). Controller: {api}</p>{msg}
<form method="post" action="/login"><label for="login-user">user</label>
<input id="login-user" name="user" autocomplete="username" autofocus>
<label for="login-token">token</label><input id="login-token" name="token" type="password"
autocomplete="current-password"><button id="login-submit" type="submit">Sign in</button></form></body></html>"""


def install(server, store: SessionStore) -> None:
    """Login/logout routes and a guard: without a valid session the dashboard page redirects to
    /login and Dash's own endpoints answer 401."""
    from flask import make_response, redirect, request

    def page(msg: str = "", status: int = 200):
        box = f'<div class="err" id="login-error">{html.escape(msg)}</div>' if msg else ""
        return make_response(LOGIN_PAGE.format(api=html.escape(store.api_url), msg=box), status)

    @server.route("/login", methods=["GET", "POST"])
    def login():
        if request.method == "GET":
            expired = request.args.get("expired")
            return page("your session has expired: sign in again" if expired else "")
        sid, why = store.login(request.form.get("user", ""), request.form.get("token", ""))
        if sid is None:
            return page(why, 401)
        resp = redirect("/", code=303)
        resp.set_cookie(COOKIE, sid, max_age=int(store.ttl_s), httponly=True, samesite="Strict",
                        secure=request.is_secure, path="/")
        return resp

    @server.route("/logout", methods=["GET", "POST"])
    def logout():
        store.logout(request.cookies.get(COOKIE))
        resp = redirect("/login", code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @server.before_request
    def guard():
        if request.path.startswith(OPEN_PATHS):
            return None
        if store.get(request.cookies.get(COOKIE)) is not None:
            return None
        if request.path == "/" or not request.path.startswith("/_dash"):
            expired = "?expired=1" if request.cookies.get(COOKIE) else ""
            return redirect("/login" + expired, code=303)
        return make_response({"error": "not signed in or session expired"}, 401)
