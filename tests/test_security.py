"""Signed command envelopes: replayed, altered, stale or foreign commands are refused;
world-readable secrets are refused."""

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from controller.security.envelope import (
    EnvelopeRefused,
    Signer,
    Verifier,
    accept_hello,
    derive_session_key,
    hello,
    session_key,
)
from controller.security.keys import SecretError, generate_private_key, load_private_key

CMD = {"device_id": "bat/3", "setpoint": "p_set_kw", "value": -4.5}


class FakeTime:
    def __init__(self):
        self.t = 1_800_000_000.0

    def __call__(self):
        return self.t


def pair(aes=None):
    key = Ed25519PrivateKey.generate()
    clock = FakeTime()
    return Signer("ctl", key, aes, clock), Verifier({"ctl": key.public_key()}, 30.0, aes, clock), clock


def test_genuine_command_accepted_once():
    s, v, _ = pair()
    wire = s.seal(CMD)
    assert v.open(wire) == CMD
    with pytest.raises(EnvelopeRefused, match="replayed"):
        v.open(wire)


def test_altered_command_refused():
    s, v, _ = pair()
    env = json.loads(s.seal(CMD))
    env["body"] = env["body"].replace("-4.5", "-45")
    with pytest.raises(EnvelopeRefused, match="bad signature"):
        v.open(json.dumps(env))


def test_stale_and_foreign_refused():
    s, v, clock = pair()
    wire = s.seal(CMD)
    clock.t += 31
    with pytest.raises(EnvelopeRefused, match="stale"):
        v.open(wire)
    other = Signer("ctl", Ed25519PrivateKey.generate(), None, clock)
    with pytest.raises(EnvelopeRefused, match="bad signature"):
        v.open(other.seal(CMD))


def test_encrypted_channel_hides_and_protects_the_command():
    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    k1, k2 = session_key(a, b.public_key()), session_key(b, a.public_key())
    assert k1 == k2
    s, v, _ = pair(k1)
    wire = s.seal(CMD)
    assert "p_set_kw" not in wire
    assert v.open(wire) == CMD
    wrong = Verifier(v.trusted, 30.0, os.urandom(32), v.clock)
    with pytest.raises(EnvelopeRefused, match="decryption failed"):
        wrong.open(s.seal(CMD))


def test_world_readable_key_refused(tmp_path):
    path = tmp_path / "k.pem"
    generate_private_key(path)
    assert load_private_key(path) is not None
    os.chmod(path, 0o644)
    with pytest.raises(SecretError, match="world-readable"):
        load_private_key(path)


def test_authenticated_session_handshake_and_mitm():
    ctl_id, bridge_id = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    clock = FakeTime()
    trusted = {"ctl": ctl_id.public_key(), "bridge": bridge_id.public_key()}
    eph_c, hello_c = hello("ctl", ctl_id, clock)
    eph_b, hello_b = hello("bridge", bridge_id, clock)
    _, peer_c = accept_hello(hello_c, trusted, clock=clock)
    _, peer_b = accept_hello(hello_b, trusted, clock=clock)
    k_ctl, k_bridge = derive_session_key(eph_c, peer_b), derive_session_key(eph_b, peer_c)
    assert k_ctl == k_bridge and len(k_ctl) == 32
    s = Signer("ctl", ctl_id, k_ctl, clock)
    v = Verifier({"ctl": ctl_id.public_key()}, 30.0, k_bridge, clock)
    assert v.open(s.seal(CMD)) == CMD
    # a man in the middle swaps in his own X25519 key: the hello's signature no longer holds
    mitm = X25519PrivateKey.generate()
    forged = json.loads(hello_c)
    forged["x25519"] = mitm.public_key().public_bytes_raw().hex()
    with pytest.raises(EnvelopeRefused, match="bad signature"):
        accept_hello(json.dumps(forged), trusted, clock=clock)
    clock.t += 60
    with pytest.raises(EnvelopeRefused, match="stale"):
        accept_hello(hello_c, trusted, clock=clock)


def test_out_of_order_and_header_swaps_are_refused():
    s, v, _ = pair(os.urandom(32))
    v.aes = s.aes
    first, second = s.seal(CMD), s.seal({**CMD, "value": 0.0})
    assert v.open(second)["value"] == 0.0
    with pytest.raises(EnvelopeRefused, match="replayed"):  # older sequence number after a newer one
        v.open(first)
    third = json.loads(s.seal(CMD))
    third["seq"] += 5  # header change breaks the signature even though the body is ciphertext
    with pytest.raises(EnvelopeRefused, match="bad signature"):
        v.open(json.dumps(third))


def test_keys_from_environment_and_trusted_key_file(tmp_path, monkeypatch):
    import base64

    from cryptography.hazmat.primitives import serialization

    from controller.security.keys import load_trusted_keys, public_bytes, write_secret_file

    key = Ed25519PrivateKey.generate()
    raw = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                            serialization.NoEncryption())
    monkeypatch.setenv("GT_TEST_KEY", base64.b64encode(raw).decode())
    assert public_bytes(load_private_key(None, env="GT_TEST_KEY")) == public_bytes(key)
    monkeypatch.setenv("GT_TEST_KEY", "not a key")
    with pytest.raises(SecretError, match=r"\$GT_TEST_KEY: not an Ed25519 private key"):
        load_private_key(None, env="GT_TEST_KEY")
    path = write_secret_file(tmp_path / "trusted.json", json.dumps({"ctl": public_bytes(key).hex()}).encode())
    trusted = load_trusted_keys(path)
    s = Signer("ctl", key, None, FakeTime())
    assert Verifier(trusted, 30.0, None, s.clock).open(s.seal(CMD)) == CMD
    os.chmod(path, 0o604)
    with pytest.raises(SecretError, match="world-readable"):
        load_trusted_keys(path)
