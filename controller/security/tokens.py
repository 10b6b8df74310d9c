"""API bearer tokens: loaded from a 0600 file and/or GRIDTWIN_API_TOKENS, kept only as SHA-256
digests and compared in constant time (hmac.compare_digest over every entry), so neither a
memory dump of the map nor response timing gives a token away.

File format (YAML or JSON): {token: {user: name, role: viewer|operator|admin}}. A null key,
a value that is not a mapping, a duplicate token or an unknown role is a one-line error.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path

import yaml

from controller.security.keys import SecretError, read_secret_file

ROLES = ("viewer", "operator", "admin")
ENV = "GRIDTWIN_API_TOKENS"


class TokenError(ValueError):
    """A tokens file or variable that cannot be used (one line naming where and what)."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a mapping key given twice (YAML keeps the last one silently)."""


def _mapping(loader, node, deep=False):
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if isinstance(key, (str, int, float, bool)) and key in seen:
            raise TokenError(f"duplicate token at line {key_node.start_mark.line + 1}")
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenStore:
    """{sha256(token): {"user", "role"}}; `lookup` compares against every entry."""

    def __init__(self, tokens: dict[str, dict] | None = None):
        self._entries: list[tuple[bytes, dict]] = []
        for tok, who in (tokens or {}).items():
            self.add(tok, who["user"], who["role"], "tokens")

    def add(self, token: str, user: str, role: str, where: str) -> None:
        if not isinstance(token, str) or not token.strip():
            raise TokenError(f"{where}: empty or non-text token (got {token!r:.20})")
        if role not in ROLES:
            raise TokenError(f"{where}: token for user {user!r}: role {role!r} not in {ROLES}")
        if not isinstance(user, str) or not user:
            raise TokenError(f"{where}: a token has no user name")
        d = _digest(token)
        if any(hmac.compare_digest(d, e) for e, _ in self._entries):
            raise TokenError(f"{where}: token for user {user!r} is given twice")
        self._entries.append((d, {"user": user, "role": role}))

    def lookup(self, token: str | None) -> dict | None:
        """The (user, role) of `token`, or None; the time taken does not depend on which entry
        (if any) matches."""
        if not token:
            return None
        d = _digest(token)
        found = None
        for e, who in self._entries:
            if hmac.compare_digest(d, e):
                found = who
        return dict(found) if found else None

    def __len__(self) -> int:
        return len(self._entries)

    def users(self) -> list[tuple[str, str]]:
        return [(w["user"], w["role"]) for _, w in self._entries]


def load_token_file(path: str | Path, store: TokenStore) -> None:
    p = Path(path)
    if not p.exists():
        raise TokenError(f"api.tokens_file: {p} not found")
    try:
        text = read_secret_file(p, private=True).decode()
    except SecretError as e:
        raise TokenError(f"api.tokens_file: {e}") from None
    except UnicodeDecodeError:
        raise TokenError(f"api.tokens_file: {p}: not text") from None
    try:
        if p.suffix == ".json":
            data = json.loads(text, object_pairs_hook=_json_pairs)
        else:
            data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - SafeLoader subclass
    except TokenError as e:
        raise TokenError(f"api.tokens_file: {p}: {e}") from None
    except (yaml.YAMLError, json.JSONDecodeError) as e:
        raise TokenError(f"api.tokens_file: {p}: not valid {'JSON' if p.suffix == '.json' else 'YAML'}"
                         f" ({str(e).splitlines()[0]})") from None
    if data is None:
        return
    if not isinstance(data, dict):
        raise TokenError(f"api.tokens_file: {p}: expected a mapping {{token: {{user, role}}}}, "
                         f"got {type(data).__name__}")
    for i, (tok, v) in enumerate(data.items()):
        where = f"api.tokens_file: {p}: entry {i + 1}"
        if tok is None or not isinstance(tok, str):
            raise TokenError(f"{where}: token must be a text key (got {tok!r:.20}; quote it)")
        if not isinstance(v, dict):
            raise TokenError(f"{where}: value must be a mapping {{user, role}}, got {type(v).__name__}")
        extra = sorted(set(v) - {"user", "role"}, key=str)
        if extra:
            raise TokenError(f"{where}: unknown field {extra[0]!r} (fields: user, role)")
        store.add(tok, str(v.get("user") or ""), str(v.get("role")), where)


def _json_pairs(pairs):
    keys = [k for k, _ in pairs]
    dup = next((k for k in keys if keys.count(k) > 1), None)
    if dup is not None:
        raise TokenError("duplicate token in a JSON object")
    return dict(pairs)


def load_tokens(tokens_file: str | Path | None, environ=None) -> TokenStore:
    """Tokens from the file (0600) and the environment variable ("token:user:role,...")."""
    store = TokenStore()
    if tokens_file:
        load_token_file(tokens_file, store)
    env = (os.environ if environ is None else environ).get(ENV, "")
    for i, item in enumerate(filter(None, (x.strip() for x in env.split(",")))):
        parts = item.split(":")
        if len(parts) != 3:
            raise TokenError(f"{ENV}: entry {i + 1}: must be token:user:role")
        store.add(parts[0], parts[1], parts[2], f"{ENV}: entry {i + 1}")
    return store
