"""Lab-side command gateway: the only way setpoints reach the lab device(s) behind it.

    python -m hil.command_gateway --listen 127.0.0.2:PORT \\
        --device lab_pv/0=127.0.0.2:1502:1:pv --key gateway.pem --trust controllers.json

A TCP server on a loopback address (one thread per client, at most `max_clients`). Each client
first completes an authenticated hello (both sides sign a fresh X25519 key; the session key
comes from that exchange), then sends command envelopes. An envelope is written to the device
only after its signature (a trusted controller key), sequence number, nonce, time window,
sender (must be the session's peer) and, in an encrypted session, decryption all check out.
Every envelope gets a signed acknowledgement: accepted with the device's read-back, or refused
with a one-line reason. Refusals are counted and logged; garbage, oversized frames, slow or
vanishing clients cost that client its connection and nothing else. Wire format and threat
model: hil/README.md, "Secure command channel".
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import signal
import socket
import socketserver
import sys
import threading
import time
from collections import Counter, OrderedDict, deque

from controller.links.base import DeviceLink, Quality
from controller.security.channel import FrameError, recv_frame, request_id, seal_ack, send_frame
from controller.security.envelope import (
    EnvelopeRefused,
    Verifier,
    accept_hello,
    derive_session_key,
    hello,
)

log = logging.getLogger("hil.command_gateway")


class GatewayError(ValueError):
    """Bad gateway configuration (one line)."""


class CommandGateway:
    """Verifies envelopes and writes accepted commands through `link` (a DeviceLink it owns)."""

    def __init__(self, link: DeviceLink, identity, trusted: dict, host: str = "127.0.0.2", port: int = 0,
                 name: str = "gateway", window_s: float = 30.0, require_encryption: bool = False,
                 max_clients: int = 8, hello_timeout_s: float = 5.0, idle_timeout_s: float = 60.0,
                 frame_timeout_s: float = 5.0):
        if not host.startswith("127."):
            raise GatewayError(f"command gateway: listen address must be loopback (127.0.0.0/8), not {host!r}")
        self.link, self.identity, self.trusted, self.name = link, identity, trusted, name
        self.window_s, self.require_encryption, self.max_clients = window_s, require_encryption, max_clients
        self.hello_timeout_s, self.idle_timeout_s, self.frame_timeout_s = hello_timeout_s, idle_timeout_s, frame_timeout_s
        self.started_at = time.time()
        # envelopes made before this gateway started are refused (its replay memory is new);
        # 0.5 s of slack for clock skew and the envelope's millisecond rounding
        self.verifier = Verifier(trusted, window_s, None, not_before=self.started_at - 0.5)
        self.device_ids = {d.device_id for d in link.devices()}
        self._lock = threading.Lock()  # one command at a time: verify, write, read back
        self._hello_nonces: OrderedDict[str, None] = OrderedDict()
        self.accepted = 0
        self.refused: Counter[str] = Counter()  # refusal kind -> count
        self.recent_refusals: deque[str] = deque(maxlen=100)
        self.clients = 0
        self.sessions = 0
        gw = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                gw._serve(self.request, self.client_address)

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

        self.server = Server((host, port), Handler)
        self.host, self.port = self.server.server_address[:2]
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> CommandGateway:
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="command-gateway", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.link.close()

    def stats(self) -> dict:
        with self._lock:
            return {"accepted": self.accepted, "refused": dict(self.refused),
                    "refused_total": sum(self.refused.values()), "sessions": self.sessions}

    # --- per connection ----------------------------------------------------------------------------
    def _refuse(self, kind: str, reason: str, peer) -> None:
        with self._lock:
            self.refused[kind] += 1
            self.recent_refusals.append(reason)
        log.warning("refused (%s) from %s:%s: %s", kind, peer[0], peer[1], reason)

    def _serve(self, sock: socket.socket, peer) -> None:
        with self._lock:
            busy = self.clients >= self.max_clients
            if not busy:
                self.clients += 1
        if busy:
            self._refuse("busy", f"more than {self.max_clients} clients", peer)
            sock.close()
            return
        try:
            self._session(sock, peer)
        except FrameError as e:
            self._refuse("frame", str(e), peer)
            _try_send(sock, {"op": "error", "reason": str(e)})
        except EnvelopeRefused as e:
            self._refuse("hello", str(e), peer)
            _try_send(sock, {"op": "error", "reason": str(e)})
        except (OSError, TimeoutError, ConnectionError) as e:
            log.info("client %s:%s gone: %s", peer[0], peer[1], e)
        except Exception as e:  # noqa: BLE001 - hostile input must never take the gateway down
            self._refuse("internal", f"{type(e).__name__}: {e}"[:200], peer)
        finally:
            with self._lock:
                self.clients -= 1
            sock.close()

    def _session(self, sock: socket.socket, peer) -> None:
        first = recv_frame(sock, self.hello_timeout_s, body_timeout_s=self.frame_timeout_s)
        if first.get("op") != "hello" or not isinstance(first.get("hello"), str):
            raise FrameError("expected a session hello first")
        name, peer_eph = accept_hello(first["hello"], self.trusted, self.window_s)
        nonce = json.loads(first["hello"]).get("nonce")
        with self._lock:
            if nonce in self._hello_nonces:
                raise EnvelopeRefused(f"replayed session hello from {name!r}")
            self._hello_nonces[nonce] = None
            while len(self._hello_nonces) > 10_000:
                self._hello_nonces.popitem(last=False)
            self.sessions += 1
        eph, mine = hello(self.name, self.identity)
        send_frame(sock, {"op": "hello", "hello": mine})
        key = derive_session_key(eph, peer_eph)
        log.info("session with %r from %s:%s", name, peer[0], peer[1])
        while True:
            try:
                frame = recv_frame(sock, self.idle_timeout_s, body_timeout_s=self.frame_timeout_s)
            except (TimeoutError, ConnectionError):
                return
            if frame["op"] != "cmd" or not isinstance(frame.get("env"), str):
                raise FrameError(f"unexpected frame op {frame['op']!r} in a session")
            send_frame(sock, self.handle(frame["env"], key, name, peer))

    def handle(self, wire: str, key: bytes, session_peer: str, peer=("?", 0)) -> dict:
        """Verify one envelope, write it if genuine, and return the signed acknowledgement."""
        req = request_id(wire)
        with self._lock:
            out = self._execute(wire, key, session_peer)
            if out["accepted"]:
                self.accepted += 1
        if not out["accepted"]:
            self._refuse(out.pop("kind"), out["reason"], peer)
        else:
            out.pop("kind", None)
        return seal_ack(self.identity, self.name, req, out, key if _encrypted(wire) else None)

    def _execute(self, wire: str, key: bytes, session_peer: str) -> dict:
        def no(kind, reason):
            return {"accepted": False, "confirmed": False, "readback": {}, "reason": reason, "kind": kind}

        try:
            cmd = self.verifier.open(wire, aes_key=key)
        except EnvelopeRefused as e:
            return no("envelope", str(e))
        env = json.loads(wire)
        if env.get("sender") != session_peer:
            return no("sender", f"envelope from {env.get('sender')!r} inside {session_peer!r}'s session")
        if self.require_encryption and not env.get("enc"):
            return no("plaintext", "this gateway accepts encrypted envelopes only")
        if not isinstance(cmd, dict):
            return no("command", "command must be a JSON object")
        dev, sp, value = cmd.get("device_id"), cmd.get("setpoint"), cmd.get("value")
        if not (isinstance(dev, str) and isinstance(sp, str) and isinstance(value, (int, float))
                and not isinstance(value, bool) and math.isfinite(value)):
            return no("command", "command needs device_id (str), setpoint (str), value (finite number)")
        if dev not in self.device_ids:
            return no("device", f"device {dev!r} is not behind this gateway")
        clock = getattr(self.link, "clock", None)
        t0 = clock.now() if clock is not None else -math.inf
        try:
            confirmed = bool(self.link.write(dev, sp, float(value)))
        except (KeyError, ValueError, OSError) as e:
            return no("device", f"write {dev}.{sp} failed: {e}"[:200])
        vals = self.link.read().get(dev, {})
        readback = {k: v.value for k, v in vals.items()  # only what was read after the write
                    if Quality(v.quality) == Quality.GOOD and math.isfinite(v.value) and v.t >= t0}
        reason = "" if confirmed else f"device did not confirm {dev}.{sp}={value:g}"
        return {"accepted": True, "confirmed": confirmed, "readback": readback, "reason": reason,
                "seq": int(env["seq"])}


def _encrypted(wire: str) -> bool:
    try:
        return bool(json.loads(wire).get("enc"))
    except (ValueError, AttributeError):
        return False


def _try_send(sock, obj) -> None:
    try:
        send_frame(sock, obj)
    except (OSError, FrameError):
        pass


# --- command line ----------------------------------------------------------------------------------
def parse_device(spec: str, index: int) -> dict:
    """`[ID=]host:port:unit:kind[:map]` -> an endpoint row (ID defaults to `<kind>/<index>`)."""
    dev_id, _, rest = spec.rpartition("=")
    parts = rest.split(":")
    if len(parts) not in (4, 5):
        raise GatewayError(f"--device {spec!r}: expected [ID=]host:port:unit:kind[:map]")
    host, port, unit, kind = parts[:4]
    if not host.startswith("127."):
        raise GatewayError(f"--device {spec!r}: host must be a loopback address (127.0.0.0/8)")
    try:
        row = {"device_id": dev_id or f"{kind}/{index}", "kind": kind, "host": host, "port": int(port),
               "unit": int(unit), "poll_s": 0.0}
    except ValueError:
        raise GatewayError(f"--device {spec!r}: port and unit must be integers") from None
    if len(parts) == 5:
        row["map"] = parts[4]
    return row


def build(args) -> CommandGateway:
    from controller.clock import WallClock
    from controller.links.modbus import ModbusLink, ModbusLinkError
    from controller.security.keys import load_private_key, load_trusted_keys

    identity = load_private_key(args.key, env=args.key_env)
    trusted = load_trusted_keys(args.trust, env=args.trust_env)
    host, _, port = args.listen.rpartition(":")
    try:
        port = int(port)
    except ValueError:
        raise GatewayError(f"--listen {args.listen!r}: expected host:port") from None
    rows = [parse_device(s, i) for i, s in enumerate(args.device)]
    try:
        link = ModbusLink(rows, WallClock(), timeout_s=args.device_timeout_s, poll_s=1e-6, stale_factor=1e9)
    except ModbusLinkError as e:
        raise GatewayError(str(e)) from None
    return CommandGateway(link, identity, trusted, host, port, name=args.name, window_s=args.window_s,
                          require_encryption=args.require_encryption)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    from controller.security.keys import SecretError

    ap = argparse.ArgumentParser(prog="hil.command_gateway", description=__doc__.splitlines()[0])
    ap.add_argument("--listen", required=True, help="host:port on a loopback address")
    ap.add_argument("--device", action="append", required=True, help="[ID=]host:port:unit:kind[:map], repeatable")
    ap.add_argument("--key", help="the gateway's Ed25519 private key (PEM, mode 600)")
    ap.add_argument("--key-env", default="GRIDTWIN_GATEWAY_KEY", help="or the variable holding it")
    ap.add_argument("--trust", help='trusted controllers: JSON {name: hex Ed25519 public key} (mode 600)')
    ap.add_argument("--trust-env", default="GRIDTWIN_GATEWAY_TRUST", help="or the variable holding it")
    ap.add_argument("--name", default="gateway", help="name in the gateway's signed hello and acks")
    ap.add_argument("--window-s", type=float, default=30.0)
    ap.add_argument("--device-timeout-s", type=float, default=0.5)
    ap.add_argument("--require-encryption", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    try:
        gw = build(args).start()
    except (SecretError, GatewayError) as e:
        print(f"hil.command_gateway: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"hil.command_gateway: cannot listen on {args.listen}: {e.strerror}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    print(f"READY {gw.host} {gw.port} devices={','.join(sorted(gw.device_ids))}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        gw.stop()
        print(f"STOPPED {json.dumps(gw.stats())}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
