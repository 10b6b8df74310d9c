"""Wire pieces of the secure command channel shared by both ends (controller link, lab gateway).

Frames: a 4-byte big-endian length, then that many bytes of UTF-8 JSON holding one object
with an `op`. Receives are bounded in size and in time (a deadline for the whole frame, so a
peer trickling bytes cannot hold a connection). Acknowledgements are signed by the gateway's
Ed25519 key and name the envelope they answer (`req`, a hash of its exact bytes), so an old
acknowledgement cannot be passed off for a new command; inside an encrypted session their
contents are AES-GCM encrypted under the session key with the header as associated data.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import time

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from controller.security.envelope import _canonical

MAX_FRAME_BYTES = 64 * 1024
_HEADER = struct.Struct(">I")


class FrameError(ValueError):
    """The peer sent something that is not a valid frame (one line: why)."""


def send_frame(sock: socket.socket, obj: dict) -> None:
    data = json.dumps(obj, allow_nan=False).encode()
    if len(data) > MAX_FRAME_BYTES:
        raise FrameError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    sock.sendall(_HEADER.pack(len(data)) + data)


def _recv_exact(sock: socket.socket, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("frame not complete before its deadline")
        sock.settimeout(left)
        chunk = sock.recv(min(n - len(buf), 65536))
        if not chunk:
            raise ConnectionError("peer closed the connection")
        buf += chunk
    return bytes(buf)


def recv_frame(sock: socket.socket, timeout_s: float, max_bytes: int = MAX_FRAME_BYTES,
               body_timeout_s: float | None = None) -> dict:
    """One JSON object; FrameError for oversized or non-JSON frames, TimeoutError/ConnectionError
    when nothing (complete) arrives in `timeout_s`. With `body_timeout_s`, a frame once begun
    must be complete within that time (an idle wait may be long, a trickled frame may not)."""
    deadline = time.monotonic() + timeout_s
    first = _recv_exact(sock, 1, deadline)
    if body_timeout_s is not None:
        deadline = min(deadline, time.monotonic() + body_timeout_s)
    (n,) = _HEADER.unpack(first + _recv_exact(sock, _HEADER.size - 1, deadline))
    if n > max_bytes:
        raise FrameError(f"frame of {n} bytes exceeds the {max_bytes}-byte limit")
    raw = _recv_exact(sock, n, deadline)
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise FrameError("frame is not JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("op"), str):
        raise FrameError("frame is not a JSON object with an 'op'")
    return obj


def request_id(envelope_wire: str) -> str:
    """What an acknowledgement quotes to say which envelope it answers."""
    return hashlib.sha256(envelope_wire.encode()).hexdigest()[:32]


def seal_ack(identity: Ed25519PrivateKey, gateway: str, req: str, payload: dict,
             aes_key: bytes | None) -> dict:
    """Signed acknowledgement frame; payload (accepted, confirmed, readback, reason) is
    encrypted when the session is."""
    ack = {"op": "ack", "gw": gateway, "req": req, "t": round(time.time(), 3), "enc": aes_key is not None}
    body = _canonical(payload)
    if aes_key is not None:
        iv = os.urandom(12)
        ack["body"] = (iv + AESGCM(aes_key).encrypt(iv, body, _canonical(ack))).hex()
    else:
        ack["body"] = body.decode()
    ack["sig"] = identity.sign(_canonical(ack)).hex()
    return ack


def open_ack(ack: dict, gateway_pub: Ed25519PublicKey, aes_key: bytes | None) -> tuple[str, dict]:
    """(req, payload) of a genuine acknowledgement; FrameError when it is not one."""
    ack = dict(ack)
    try:
        sig = bytes.fromhex(ack.pop("sig"))
        gateway_pub.verify(sig, _canonical(ack))
        body = ack.pop("body")
        if ack.get("enc"):
            if aes_key is None:
                raise FrameError("encrypted acknowledgement outside an encrypted session")
            raw = bytes.fromhex(body)
            body = AESGCM(aes_key).decrypt(raw[:12], raw[12:], _canonical(ack))
        payload = json.loads(body)
        return str(ack["req"]), payload
    except InvalidSignature:
        raise FrameError("acknowledgement with a bad gateway signature") from None
    except InvalidTag:
        raise FrameError("acknowledgement does not decrypt under the session key") from None
    except (KeyError, ValueError, TypeError, AttributeError):
        raise FrameError("malformed acknowledgement") from None
