"""Signed, optionally encrypted, replay-protected command envelopes (controller → bridge).

Wire form (JSON): {"v":1,"sender":..,"seq":n,"nonce":hex16,"t":epoch_s,"enc":bool,
"body": command JSON (or AES-GCM ciphertext hex), "sig": Ed25519 over the canonical JSON of
every other field}. The verifier refuses a bad signature, a sequence number not above the
last accepted one from that sender, a nonce seen before, and a timestamp outside its window.
Encryption uses a per-session AES-256-GCM key (X25519 agreement + HKDF-SHA256); the header
fields are the AEAD's associated data so they cannot be swapped between envelopes.

Session keys come from an authenticated ephemeral exchange: each side sends a `hello`
(fresh X25519 public key, its name, time, nonce) signed with its long-term Ed25519 key;
`accept_hello` checks the signature against the trusted keys and the time window, so a
man in the middle cannot substitute its own X25519 key. Both sides then derive the same
key with `derive_session_key`, bound to both hellos.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class EnvelopeRefused(ValueError):
    """The bridge refused a command envelope; the message says why (one line)."""


def _canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def session_key(own: X25519PrivateKey, peer: X25519PublicKey, context: bytes = b"gridtwin-cmd-v1") -> bytes:
    """Both ends derive the same 32-byte AES key from an X25519 exchange."""
    return HKDF(hashes.SHA256(), 32, salt=None, info=context).derive(own.exchange(peer))


def hello(name: str, identity: Ed25519PrivateKey, clock=time.time) -> tuple[X25519PrivateKey, str]:
    """A fresh ephemeral X25519 key and its signed announcement."""
    eph = X25519PrivateKey.generate()
    msg = {"v": 1, "name": name, "t": round(clock(), 3), "nonce": os.urandom(16).hex(),
           "x25519": eph.public_key().public_bytes_raw().hex()}
    msg["sig"] = identity.sign(_canonical(msg)).hex()
    return eph, json.dumps(msg)


def accept_hello(wire: str, trusted: dict[str, Ed25519PublicKey], window_s: float = 30.0,
                 clock=time.time) -> tuple[str, X25519PublicKey]:
    """The peer's name and ephemeral key, if its hello is signed by a trusted key and fresh."""
    try:
        msg = json.loads(wire)
        sig = bytes.fromhex(msg.pop("sig"))
        name, t, peer = msg["name"], float(msg["t"]), X25519PublicKey.from_public_bytes(bytes.fromhex(msg["x25519"]))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise EnvelopeRefused("malformed session hello") from None
    pub = trusted.get(name)
    if pub is None:
        raise EnvelopeRefused(f"session hello from unknown peer {name!r}")
    try:
        pub.verify(sig, _canonical(msg))
    except InvalidSignature:
        raise EnvelopeRefused(f"session hello from {name!r} has a bad signature (substituted key?)") from None
    if abs(clock() - t) > window_s:
        raise EnvelopeRefused(f"stale session hello from {name!r}")
    return name, peer


def derive_session_key(own: X25519PrivateKey, peer: X25519PublicKey) -> bytes:
    """AES-256 key bound to both ephemeral public keys (sorted, so both ends agree)."""
    pubs = sorted([own.public_key().public_bytes_raw(), peer.public_bytes_raw()])
    return session_key(own, peer, b"gridtwin-cmd-v1" + pubs[0] + pubs[1])


class Signer:
    """Controller side: numbers, signs and (optionally) encrypts each command."""

    def __init__(self, sender: str, key: Ed25519PrivateKey, aes_key: bytes | None = None,
                 clock=time.time):
        self.sender, self.key, self.aes, self.clock = sender, key, aes_key, clock
        self.seq = 0

    def seal(self, command: dict) -> str:
        self.seq += 1
        env = {"v": 1, "sender": self.sender, "seq": self.seq, "nonce": os.urandom(16).hex(),
               "t": round(self.clock(), 3), "enc": self.aes is not None}
        body = _canonical(command)
        if self.aes is not None:
            iv = os.urandom(12)
            env["body"] = (iv + AESGCM(self.aes).encrypt(iv, body, _canonical(env))).hex()
        else:
            env["body"] = body.decode()
        env["sig"] = self.key.sign(_canonical(env)).hex()
        return json.dumps(env)


class Verifier:
    """Bridge side: accepts each genuine envelope exactly once, within its time window."""

    def __init__(self, trusted: dict[str, Ed25519PublicKey], window_s: float = 30.0,
                 aes_key: bytes | None = None, clock=time.time, nonce_memory: int = 100_000,
                 not_before: float | None = None):
        self.trusted, self.window_s, self.aes, self.clock = trusted, window_s, aes_key, clock
        self.not_before = not_before  # e.g. the bridge's start: older envelopes are refused
        self.last_seq: dict[str, int] = {}
        self.nonces: OrderedDict[str, None] = OrderedDict()
        self.nonce_memory = nonce_memory

    def open(self, wire: str, aes_key: bytes | None | object = ...) -> dict:
        """The command inside `wire`; `aes_key` overrides the verifier's key for this call (one
        verifier, hence one replay memory, shared by several sessions)."""
        aes = self.aes if aes_key is ... else aes_key
        try:
            env = json.loads(wire)
            sig = bytes.fromhex(env.pop("sig"))
            sender, seq, nonce, t = env["sender"], int(env["seq"]), env["nonce"], float(env["t"])
        except (ValueError, KeyError, TypeError, AttributeError):
            raise EnvelopeRefused("malformed envelope") from None
        pub = self.trusted.get(sender)
        if pub is None:
            raise EnvelopeRefused(f"unknown sender {sender!r}")
        try:
            pub.verify(sig, _canonical(env))
        except InvalidSignature:
            raise EnvelopeRefused(f"bad signature from {sender!r} (altered or forged)") from None
        now = self.clock()
        if abs(now - t) > self.window_s:
            raise EnvelopeRefused(f"stale envelope: {now - t:.1f} s old, window {self.window_s:g} s")
        if self.not_before is not None and t < self.not_before:
            raise EnvelopeRefused(f"envelope from {sender!r} predates this verifier's start (replay?)")
        if seq <= self.last_seq.get(sender, 0) or nonce in self.nonces:
            raise EnvelopeRefused(f"replayed envelope from {sender!r} (seq {seq})")
        body = env.pop("body")
        if env.get("enc"):
            if aes is None:
                raise EnvelopeRefused("encrypted envelope but no session key")
            try:
                raw = bytes.fromhex(body)
                body = AESGCM(aes).decrypt(raw[:12], raw[12:], _canonical({**env})).decode()
            except (InvalidTag, ValueError, TypeError):
                raise EnvelopeRefused("decryption failed (wrong session key or altered)") from None
        self.last_seq[sender] = seq
        self.nonces[nonce] = None
        while len(self.nonces) > self.nonce_memory:
            self.nonces.popitem(last=False)
        try:
            return json.loads(body)
        except (ValueError, TypeError):
            raise EnvelopeRefused(f"envelope from {sender!r} carries no JSON command") from None
