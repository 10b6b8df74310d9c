"""Run-time fault control for a running `gridtwin emulate`: a line protocol on loopback.

One JSON object per line in, one per line out:
  {"op": "inject", "kind": "latency", "target": "pv:0", "value": 0.5}  -> {"ok": true, "event": {...}}
  {"op": "clear", "kind": "latency", "target": "pv:0"}                 -> {"ok": true, "event": {...}}
  {"op": "list"}                                                       -> {"ok": true, "faults": [...]}
Errors (unknown kind or target, bad JSON) answer {"ok": false, "error": "..."}. Every change is
logged to the twin's events (fault_start / fault_end, source "control") and appended at once to
the run's events.jsonl, so an operator can follow it while a controller is attached.
"""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path

from device_emulators.faults import clear, inject

MAX_LINE = 4096


class ControlServer:
    def __init__(self, host, events_path: str | Path | None = None):
        self.host = host
        self.events_path = Path(events_path) if events_path else None
        self.server: asyncio.AbstractServer | None = None

    async def start(self, address: str, port: int) -> int:
        self.server = await asyncio.start_server(self._serve, address, port, limit=MAX_LINE)
        return self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            self.server = None

    def _apply(self, req: dict) -> dict:
        """Runs in a worker thread holding the twin lock (faults touch devices and the event log)."""
        op = req.get("op")
        h = self.host
        with h.lock:
            if op == "list":
                return {"ok": True, "faults": [{"kind": k, "target": t, "value": v}
                                               for (k, t), v in sorted(h.active_faults.items())]}
            kind, target = req.get("kind"), req.get("target")
            if not isinstance(kind, str) or not isinstance(target, str):
                return {"ok": False, "error": "inject/clear need string fields 'kind' and 'target'"}
            if op == "inject":
                ev = inject(h, kind, target, req.get("value"), source="control")
            elif op == "clear":
                if (kind, target) not in h.active_faults:
                    return {"ok": False, "error": f"no active fault {kind} on {target}"}
                ev = clear(h, kind, target, source="control")
            else:
                return {"ok": False, "error": f"unknown op {op!r} (inject, clear, list)"}
        if self.events_path is not None:
            with open(self.events_path, "a") as f:
                f.write(json.dumps(ev, default=str) + "\n")
        return {"ok": True, "event": ev}

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                try:
                    req = json.loads(line)
                    if not isinstance(req, dict):
                        raise ValueError("expected a JSON object")
                    reply = await asyncio.to_thread(self._apply, req)
                except (ValueError, KeyError) as e:
                    reply = {"ok": False, "error": str(e)}
                writer.write((json.dumps(reply, default=str) + "\n").encode())
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError):
            pass
        finally:
            writer.close()


def request(address: str, req: dict, timeout_s: float = 10.0) -> dict:
    """Send one request to a control port ('HOST:PORT') and return the reply."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s) as s:
        s.sendall((json.dumps(req) + "\n").encode())
        buf = b""
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    return json.loads(buf)
