"""API tokens (controller.security.tokens): the file must be 0600; null keys, non-mapping
values, duplicate tokens and unknown roles are one-line errors; lookup goes over hashes with a
constant-time comparison."""

import os

import pytest

from controller.security import tokens as tk
from controller.security.tokens import TokenError, TokenStore, load_tokens


def write(tmp_path, text, mode=0o600, name="tokens.yaml"):
    p = tmp_path / name
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_good_file_and_env_merge(tmp_path):
    p = write(tmp_path, "abc123: {user: ann, role: operator}\n'007': {user: bob, role: viewer}\n")
    s = load_tokens(p, environ={"GRIDTWIN_API_TOKENS": "zz-top:zed:admin"})
    assert len(s) == 3
    assert s.lookup("abc123") == {"user": "ann", "role": "operator"}
    assert s.lookup("007") == {"user": "bob", "role": "viewer"}
    assert s.lookup("zz-top")["role"] == "admin"
    assert s.lookup("abc12") is None and s.lookup("") is None and s.lookup(None) is None
    # only digests are kept: no token text in the store
    assert "abc123" not in repr(s.__dict__)


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604])
def test_group_or_world_readable_file_refused(tmp_path, mode):
    p = write(tmp_path, "abc: {user: ann, role: viewer}\n", mode)
    with pytest.raises(TokenError, match="chmod 600") as e:
        load_tokens(p, environ={})
    assert "\n" not in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("text, needle", [
    ("abc: viewer\n", "value must be a mapping"),
    ("abc: [1, 2]\n", "value must be a mapping"),
    ("~: {user: ann, role: viewer}\n", "token must be a text key"),
    ("null: {user: ann, role: viewer}\n", "token must be a text key"),
    ("abc: {user: ann, role: viewer}\nabc: {user: bob, role: admin}\n", "duplicate token at line 2"),
    ("abc: {user: ann, role: boss}\n", "role 'boss' not in"),
    ("abc: {user: ann, role: viewer, extra: 1}\n", "unknown field 'extra'"),
    ("- abc\n", "expected a mapping"),
    ("abc: {user: ann, role: viewer\n", "not valid YAML"),
])
def test_bad_files_are_one_line_errors(tmp_path, text, needle):
    p = write(tmp_path, text)
    with pytest.raises(TokenError, match=needle) as e:
        load_tokens(p, environ={})
    assert "\n" not in str(e.value)


def test_same_token_twice_across_file_and_env_refused(tmp_path):
    p = write(tmp_path, "abc: {user: ann, role: viewer}\n")
    with pytest.raises(TokenError, match="given twice"):
        load_tokens(p, environ={"GRIDTWIN_API_TOKENS": "abc:bob:admin"})
    j = write(tmp_path, '{"a1": {"user": "x", "role": "viewer"}, "a1": {"user": "y", "role": "admin"}}',
              name="t.json")
    with pytest.raises(TokenError, match="duplicate"):
        load_tokens(j, environ={})


def test_lookup_compares_every_entry_in_constant_time(monkeypatch):
    s = TokenStore({f"tok-{i}": {"user": f"u{i}", "role": "viewer"} for i in range(5)})
    calls = []
    real = tk.hmac.compare_digest
    monkeypatch.setattr(tk.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert s.lookup("tok-0")["user"] == "u0"
    assert len(calls) == 5  # no early exit on the first match
    calls.clear()
    assert s.lookup("nope") is None and len(calls) == 5
