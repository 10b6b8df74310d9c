"""Recorder and replay: every message on every device link (and the control channel), with
timestamps, to a JSONL file; and a ReplayLink that feeds a recorded run's telemetry into a
(new version of the) controller so its writes can be compared with the recorded ones.

File format, one JSON object per line (NaN is written as null):
  {"op":"devices","link":L,"devices":[{device_id,group,kind,bus,ratings}, ...]}
  {"op":"read","link":L,"t":clock_s,"w":wall_s,"data":{dev:{qty:[value,quality]}}}
  {"op":"read_groups","link":L,"t":..,"w":..,"data":{group:{"values":{qty:[..]},
        "quality":{qty:[..]},"available":[..]}}}
  {"op":"status","link":L,"t":..,"w":..,"data":{dev:[available,reason]}}
  {"op":"write","link":L,"t":..,"w":..,"device":dev,"setpoint":s,"value":v,"ok":bool}
  {"op":"chan","dir":"in"|"out","w":..,"msg":{...}}           (control channel)
"""

from __future__ import annotations

import bisect
import json
import math
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from controller.links.base import DeviceInfo, DeviceLink, DeviceStatus, Quality, Value


def _clean(x):
    """JSON-safe copy: numpy to lists, NaN/inf to None."""
    if isinstance(x, np.ndarray):
        x = x.tolist()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _clean(x.item())
    if isinstance(x, dict):
        return {str(k): _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    return x


class RecordFile:
    """Thread-safe JSONL writer shared by every RecordingLink and the channel of one process."""

    def __init__(self, path: str | Path, append: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(self.path, "a" if append else "w", buffering=1 << 16)
        self._lock = threading.Lock()
        self.lines = 0

    def write(self, rec: dict) -> None:
        line = json.dumps(_clean(rec), separators=(",", ":"))
        with self._lock:
            self._f.write(line + "\n")
            self.lines += 1

    def channel_hook(self, direction: str, msg: dict, wall_t: float) -> None:
        self.write({"op": "chan", "dir": direction, "w": wall_t, "msg": msg})

    def flush(self) -> None:
        with self._lock:
            self._f.flush()

    def close(self) -> None:
        with self._lock:
            if not self._f.closed:
                self._f.close()


class RecordingLink(DeviceLink):
    """Decorator around any DeviceLink: forwards every call and records it."""

    def __init__(self, inner: DeviceLink, rec: RecordFile, name: str, clock):
        self.inner, self.rec, self.name, self.clock = inner, rec, name, clock
        self._devices_logged = False

    def __getattr__(self, attr):  # link-specific extras (e.g. poll(), endpoints) pass through
        return getattr(self.inner, attr)

    def devices(self) -> list[DeviceInfo]:
        infos = self.inner.devices()
        if not self._devices_logged:
            self.rec.write({"op": "devices", "link": self.name,
                            "devices": [{"device_id": d.device_id, "group": d.group, "kind": d.kind,
                                         "bus": d.bus, "ratings": d.ratings} for d in infos]})
            self._devices_logged = True
        return infos

    def read(self) -> dict[str, dict[str, Value]]:
        out = self.inner.read()
        self.rec.write({"op": "read", "link": self.name, "t": self.clock.now(), "w": time.time(),
                        "data": {d: {k: [v.value, Quality(v.quality).value] for k, v in q.items()}
                                 for d, q in out.items()}})
        return out

    @property
    def read_groups(self):
        fn = self.inner.read_groups  # AttributeError when the inner link has no fast path

        def read_groups():
            out = fn()
            self.rec.write({"op": "read_groups", "link": self.name, "t": self.clock.now(),
                            "w": time.time(),
                            "data": {g: {"values": vals, "quality": q, "available": a}
                                     for g, (vals, q, a) in out.items()}})
            return out

        return read_groups

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        ok = self.inner.write(device_id, setpoint, value)
        self.rec.write({"op": "write", "link": self.name, "t": self.clock.now(), "w": time.time(),
                        "device": device_id, "setpoint": setpoint, "value": float(value),
                        "ok": bool(ok)})
        return ok

    def status(self) -> dict[str, DeviceStatus]:
        st = self.inner.status()
        self.rec.write({"op": "status", "link": self.name, "t": self.clock.now(), "w": time.time(),
                        "data": {d: [s.available, s.reason] for d, s in st.items()}})
        return st

    def close(self) -> None:
        self.inner.close()


# --- reading and replaying ------------------------------------------------------------------


def load_records(path: str | Path) -> list[dict]:
    out = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                raise ValueError(f"{path}: line {n}: not JSON (truncated recording?)") from None
    return out


def _nan(x):
    return np.nan if x is None else x


class ReplayLink(DeviceLink):
    """Serves one recorded link's telemetry by clock time; collects the writes it is sent.

    read()/read_groups()/status() return the latest recorded answer at or before clock.now();
    write() answers what the recorded device answered to the same write, else True.
    """

    def __init__(self, records: list[dict], name: str, clock):
        self.name, self.clock = name, clock
        mine = [r for r in records if r.get("link") == name]
        dev = next((r for r in mine if r["op"] == "devices"), None)
        if dev is None:
            raise ValueError(f"recording has no device list for link {name!r}")
        self._infos = [DeviceInfo(d["device_id"], d["group"], d["kind"], d.get("bus"),
                                  d.get("ratings") or {}) for d in dev["devices"]]
        self._series = {op: [r for r in mine if r["op"] == op] for op in ("read", "read_groups", "status")}
        self._times = {op: [r["t"] for r in rs] for op, rs in self._series.items()}
        self._acks = {(r["t"], r["device"], r["setpoint"]): r["ok"] for r in mine if r["op"] == "write"}
        self.writes: list[dict] = []
        if self._series["read_groups"]:
            self.read_groups = self._read_groups  # offer the fast path only if it was used

    def _at(self, op: str) -> dict | None:
        i = bisect.bisect_right(self._times[op], self.clock.now() + 1e-9)
        return self._series[op][i - 1] if i else None

    def devices(self) -> list[DeviceInfo]:
        return list(self._infos)

    def read(self) -> dict[str, dict[str, Value]]:
        r = self._at("read")
        if r is None:
            return {}
        return {d: {k: Value(_nan(v), Quality(qual), r["t"]) for k, (v, qual) in q.items()}
                for d, q in r["data"].items()}

    def _read_groups(self):
        r = self._at("read_groups")
        if r is None:
            return {}
        out = {}
        for g, d in r["data"].items():
            vals = {k: np.array([_nan(x) for x in v], float) for k, v in d["values"].items()}
            q = {k: np.array(v, np.int8) for k, v in d["quality"].items()}
            out[g] = (vals, q, np.array(d["available"], bool))
        return out

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        t = self.clock.now()
        self.writes.append({"t": t, "device": device_id, "setpoint": setpoint, "value": float(value)})
        return bool(self._acks.get((t, device_id, setpoint), True))

    def status(self) -> dict[str, DeviceStatus]:
        r = self._at("status")
        if r is None:
            return {}
        return {d: DeviceStatus(bool(a), reason or "", r["t"] if a else None) for d, (a, reason) in r["data"].items()}


def recorded_ticks(records: list[dict]) -> list[float]:
    """Clock times of the controller cycles in a recording (from the control channel)."""
    return [r["msg"]["t"] for r in records
            if r["op"] == "chan" and r["dir"] == "in" and r["msg"].get("op") == "tick"]


def recorded_writes(records: list[dict]) -> list[dict]:
    return [{"t": r["t"], "device": r["device"], "setpoint": r["setpoint"], "value": r["value"]}
            for r in records if r["op"] == "write"]


@dataclass
class Divergence:
    t: float
    device: str
    setpoint: str
    old: float | None  # recorded value (None: the old version did not write it)
    new: float | None  # replayed value (None: the new version did not write it)

    def describe(self, start_epoch: float | None = None) -> str:
        from controller.clock import iso

        when = iso(self.t)
        if start_epoch is not None:
            when += f" (+{self.t - start_epoch:g} s)"
        fmt = lambda v: "-" if v is None else f"{v:g}"
        return f"{when} {self.device}.{self.setpoint}: old {fmt(self.old)} -> new {fmt(self.new)}"


def compare_writes(old: list[dict], new: list[dict], tol: float = 1e-6) -> list[Divergence]:
    """Every (time, device, setpoint) where the two write streams differ, time-ordered.

    The last value per (t, device, setpoint) counts (a cycle may rewrite a setpoint)."""
    def index(ws):
        d = {}
        for w in ws:
            d[(round(w["t"], 6), w["device"], w["setpoint"])] = w["value"]
        return d

    a, b = index(old), index(new)
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if va is None or vb is None or abs(va - vb) > tol * max(1.0, abs(va)):
            out.append(Divergence(key[0], key[1], key[2], va, vb))
    return out
