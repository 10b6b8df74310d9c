"""SecureCommandLink: setpoints travel as signed (and encrypted) envelopes to a lab command gateway.

Telemetry and discovery go through the inner link unchanged (plain Modbus reads: they carry no
authority over the device); every write becomes a command envelope sent to the gateway
(hil/command_gateway.py), which verifies it, writes the device and answers with a signed
acknowledgement carrying the device's read-back. A refused, unanswered or unverifiable write
returns False like any other failed link write, so the controller's cycle goes on.

Envelope times are wall-clock (time.time), never the controller's Clock, which in lockstep HIL
is simulated time. A sequence number is at least the wall clock in microseconds, so it keeps
rising across reconnects, controller restarts and several links with the same identity (the
gateway's replay memory outlives sessions and refuses anything not above the last one). Wire format and threat model: hil/README.md, "Secure command channel".
"""

from __future__ import annotations

import logging
import math
import socket
import threading
import time

from controller.links.base import DeviceInfo, DeviceLink, DeviceStatus, Value
from controller.security.channel import FrameError, open_ack, recv_frame, request_id, send_frame
from controller.security.envelope import (
    EnvelopeRefused,
    Signer,
    accept_hello,
    derive_session_key,
    hello,
)

log = logging.getLogger("controller.links.secure")


class SecureLinkError(ValueError):
    """Bad secure-channel configuration (one line, names the field)."""


def parse_addr(addr: str) -> tuple[str, int]:
    host, _, port = str(addr).rpartition(":")
    if not host.startswith("127.") or not port.isdigit():
        raise SecureLinkError(f"secure.gateway {addr!r}: expected a loopback host:port (127.0.0.0/8)")
    return host, int(port)


class SecureCommandLink(DeviceLink):
    def __init__(self, inner: DeviceLink, gateway_addr: str, identity_key, gateway_pubkey,
                 encrypt: bool = True, name: str = "controller", gateway_name: str = "gateway",
                 timeout_s: float = 2.0):
        self.inner = inner
        self.addr = parse_addr(gateway_addr)
        self.identity, self.name, self.encrypt, self.timeout_s = identity_key, name, encrypt, timeout_s
        self.gateway_pub = gateway_pubkey
        self.gateway_trusted = {gateway_name: gateway_pubkey}
        self.signer = Signer(name, identity_key)
        self._sock: socket.socket | None = None
        self._aes: bytes | None = None
        self._lock = threading.Lock()
        self.secure_writes = self.refused = self.failures = 0
        self.last_ack: dict | None = None
        self.readback: dict[str, dict[str, float]] = {}  # device id -> gateway's read-back
        self.last_error = ""

    # reads, discovery and status: the inner link
    def devices(self) -> list[DeviceInfo]:
        return self.inner.devices()

    def read(self) -> dict[str, dict[str, Value]]:
        return self.inner.read()

    def status(self) -> dict[str, DeviceStatus]:
        return self.inner.status()

    # --- the session ---------------------------------------------------------------------------------
    def _connect(self) -> None:
        sock = socket.create_connection(self.addr, timeout=self.timeout_s)
        try:
            eph, mine = hello(self.name, self.identity)
            send_frame(sock, {"op": "hello", "hello": mine})
            reply = recv_frame(sock, self.timeout_s)
            if reply.get("op") != "hello":
                raise FrameError(f"gateway refused the session: {reply.get('reason', reply.get('op'))}")
            _, peer = accept_hello(str(reply.get("hello")), self.gateway_trusted)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._aes = derive_session_key(eph, peer)
        self.signer.aes = self._aes if self.encrypt else None

    def _drop(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        if not math.isfinite(float(value)):
            return False
        with self._lock:
            try:
                if self._sock is None:
                    self._connect()
                self.signer.seq = max(self.signer.seq, time.time_ns() // 1000)  # seal adds 1
                wire = self.signer.seal({"device_id": device_id, "setpoint": setpoint, "value": float(value)})
                req = request_id(wire)
                send_frame(self._sock, {"op": "cmd", "env": wire})
                deadline = time.monotonic() + self.timeout_s
                for _ in range(16):  # skip acks for envelopes that are not ours (late, injected)
                    frame = recv_frame(self._sock, max(deadline - time.monotonic(), 0.0))
                    if frame["op"] == "error":
                        raise FrameError(f"gateway closed the session: {frame.get('reason')}")
                    if frame["op"] != "ack":
                        continue
                    got, payload = open_ack(frame, self.gateway_pub, self._aes)
                    if got == req:
                        break
                else:
                    raise FrameError("no acknowledgement for the envelope")
            except (OSError, FrameError, EnvelopeRefused) as e:  # TimeoutError/ConnectionError are OSError
                self._drop()
                self.failures += 1
                self.last_error = f"{type(e).__name__}: {e}"[:200]
                log.info("secure write %s.%s=%g failed: %s", device_id, setpoint, value, self.last_error)
                return False
        self.last_ack = payload
        if not payload.get("accepted"):
            self.refused += 1
            self.last_error = str(payload.get("reason", ""))[:200]
            log.warning("gateway refused %s.%s=%g: %s", device_id, setpoint, value, self.last_error)
            return False
        self.secure_writes += 1
        self.readback[device_id] = dict(payload.get("readback") or {})
        return bool(payload.get("confirmed"))

    def close(self) -> None:
        with self._lock:
            self._drop()
        self.inner.close()


def secure_link_from_config(inner: DeviceLink, cfg: dict) -> SecureCommandLink:
    """A SecureCommandLink from an endpoint row's `secure` block: gateway, key_file | key_env,
    gateway_pubkey_file | gateway_pubkey_env (JSON {gateway name: hex key}), encrypt, name."""
    from controller.security.keys import SecretError, load_private_key, load_trusted_keys

    if not isinstance(cfg, dict) or not cfg.get("gateway"):
        raise SecureLinkError("secure: needs 'gateway' (host:port)")
    key = load_private_key(cfg.get("key_file"), env=cfg.get("key_env") or "GRIDTWIN_CONTROLLER_KEY")
    pubs = load_trusted_keys(cfg.get("gateway_pubkey_file"), env=cfg.get("gateway_pubkey_env") or "GRIDTWIN_GATEWAY_PUBKEY")
    if len(pubs) != 1:
        raise SecretError(f"{cfg.get('gateway_pubkey_file') or 'gateway public key'}: expected exactly one "
                          f"{{name: key}} entry, found {len(pubs)}")
    (gw_name, gw_pub), = pubs.items()
    return SecureCommandLink(inner, cfg["gateway"], key, gw_pub, encrypt=bool(cfg.get("encrypt", True)),
                             name=str(cfg.get("name") or "controller"), gateway_name=gw_name,
                             timeout_s=float(cfg.get("timeout_s", 2.0)))
