"""The coordinator <-> controller-process control channel: newline-delimited JSON over one
loopback TCP connection (spec in hil/README.md).

Small on purpose: the coordinator listens, the controller process connects and says
`hello`; then `init` / `ready`, and per controller cycle `tick` / `done`; `stop` / `bye` at
the end. Every receive has a timeout, so a hung or killed peer is an error, never a hang.
"""

from __future__ import annotations

import json
import socket
import time

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 16 * 1024 * 1024  # an init message carries the endpoint table


class ChannelError(RuntimeError):
    """The peer closed, sent garbage, or did not answer in time."""


class Channel:
    """One end of the control channel: send(dict) / recv(timeout_s) -> dict.

    `on_message(direction, msg, wall_t)` (optional) sees every message, for the recorder.
    """

    def __init__(self, sock: socket.socket, on_message=None):
        self.sock = sock
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._buf = bytearray()
        self.on_message = on_message
        self.bytes_sent = 0
        self.bytes_received = 0

    def send(self, msg: dict) -> None:
        data = (json.dumps(msg, separators=(",", ":")) + "\n").encode()
        try:
            self.sock.sendall(data)
        except OSError as e:
            raise ChannelError(f"control channel send failed: {e}") from e
        self.bytes_sent += len(data)
        if self.on_message:
            self.on_message("out", msg, time.time())

    def recv(self, timeout_s: float) -> dict:
        deadline = time.monotonic() + timeout_s
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                try:
                    msg = json.loads(line)
                except ValueError as e:
                    raise ChannelError(f"control channel: not JSON: {line[:80]!r}") from e
                if not isinstance(msg, dict) or "op" not in msg:
                    raise ChannelError(f"control channel: message without 'op': {line[:80]!r}")
                self.bytes_received += nl + 1
                if self.on_message:
                    self.on_message("in", msg, time.time())
                return msg
            if len(self._buf) > MAX_LINE_BYTES:
                raise ChannelError("control channel: line too long")
            left = deadline - time.monotonic()
            if left <= 0:
                raise ChannelError(f"control channel: no message within {timeout_s:g} s")
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise ChannelError(f"control channel: no message within {timeout_s:g} s") from None
            except OSError as e:
                raise ChannelError(f"control channel: {e}") from e
            if not chunk:
                raise ChannelError("control channel: peer closed the connection")
            self._buf += chunk

    def expect(self, op: str, timeout_s: float) -> dict:
        """Receive one message and insist on its op (an 'error' op from the peer is raised)."""
        msg = self.recv(timeout_s)
        if msg["op"] == "error":
            raise ChannelError(f"controller process error: {msg.get('message', '?')}")
        if msg["op"] != op:
            raise ChannelError(f"control channel: expected {op!r}, got {msg['op']!r}")
        return msg

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class Listener:
    """The coordinator's side: bound before the controller process starts (no port race)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(1)
        self.host, self.port = self.sock.getsockname()[:2]

    def accept(self, timeout_s: float, alive=None, on_message=None) -> Channel:
        """Wait for the controller process; `alive()` False (process died) stops the wait early."""
        deadline = time.monotonic() + timeout_s
        self.sock.settimeout(0.2)
        while time.monotonic() < deadline:
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                if alive is not None and not alive():
                    raise ChannelError("controller process exited before connecting") from None
                continue
            return Channel(conn, on_message)
        raise ChannelError(f"controller process did not connect within {timeout_s:g} s")

    def close(self) -> None:
        self.sock.close()


def connect(host: str, port: int, timeout_s: float = 10.0) -> Channel:
    """The controller process's side."""
    sock = socket.create_connection((host, port), timeout=timeout_s)
    return Channel(sock)
