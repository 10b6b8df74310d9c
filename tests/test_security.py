"""Signed command envelopes: replayed, altered, stale or foreign commands are refused;
world-readable secrets are refused."""

import json
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from controller.security.envelope import EnvelopeRefused, Signer, Verifier, session_key
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
