"""DirectLink: in-process access to a simulated fleet, for fast pure-simulation runs.

It never imports the twin: it talks to a duck-typed *port* (hil/direct.py builds one over a
Twin) that offers
    describe() -> {group: {"kind": str, "bus": int array, "ratings": {name: array}}}
    read()     -> {group: {quantity: array}}          (arrays indexed by device)
    write(group, setpoint, index, value)               raises ValueError when refused
    available() -> {group: bool array}                (optional; device answers)
    setpoints() -> {group: [setpoint names]}           (optional; default: the kind's setpoints)
Setpoints the fleet holds are read back from its telemetry where it reports them under the
setpoint's own name (p_set_kw, p_limit_pct, p_max_set_kw, curtail_pct, force).
Besides the per-device DeviceLink API it offers `read_groups`, an array fast path the
controller cycle uses so a cycle costs numpy operations, not Python objects per device.
"""

from __future__ import annotations

import numpy as np

from controller.kinds import KINDS
from controller.links.base import DeviceInfo, DeviceLink, DeviceStatus, Quality, Value
from controller.state import Q_GOOD, Q_MISSING


class DirectLink(DeviceLink):
    def __init__(self, port, clock, groups: list[str] | None = None):
        self.port = port
        self.clock = clock
        desc = port.describe()
        self.groups = {g: d for g, d in desc.items() if groups is None or g in groups}
        self._infos: list[DeviceInfo] = []
        for g, d in self.groups.items():
            ratings = d.get("ratings", {})
            for i, b in enumerate(np.asarray(d["bus"])):
                self._infos.append(DeviceInfo(f"{g}/{i}", g, d["kind"], int(b),
                                              {k: float(v[i]) for k, v in ratings.items()}))
        self._status: dict[str, DeviceStatus] = {}
        self.writes = 0
        self.refused = 0

    def devices(self) -> list[DeviceInfo]:
        return list(self._infos)

    def _avail(self) -> dict[str, np.ndarray]:
        fn = getattr(self.port, "available", None)
        return fn() if fn else {}

    def read_groups(self) -> dict[str, tuple[dict, dict, np.ndarray]]:
        """{group: (values, quality codes, available)}: copies, so later writes don't alias."""
        data = self.port.read()
        av = self._avail()
        out = {}
        for g in self.groups:
            vals = {k: np.array(v, float) for k, v in data.get(g, {}).items()}
            a = np.asarray(av.get(g, np.ones(len(self.groups[g]["bus"]), bool)), bool)
            q0 = np.where(a, Q_GOOD, Q_MISSING).astype(np.int8)  # the same codes for every value
            q = {k: q0.copy() for k in vals}
            if not a.all():
                for k in vals:
                    vals[k][~a] = np.nan
            out[g] = (vals, q, a)
        return out

    def read(self) -> dict[str, dict[str, Value]]:
        t = self.clock.now()
        out: dict[str, dict[str, Value]] = {}
        for g, (vals, q, a) in self.read_groups().items():
            for i in range(len(a)):
                dev = f"{g}/{i}"
                out[dev] = {k: Value(float(v[i]), Quality.GOOD if a[i] else Quality.MISSING, t)
                            for k, v in vals.items()}
        return out

    def _setpoints(self, g: str) -> frozenset[str]:
        fn = getattr(self.port, "setpoints", None)
        if fn is not None:
            return frozenset(fn().get(g, ()))
        k = KINDS.get(self.groups[g]["kind"])
        return frozenset(k.setpoints if k is not None else ())

    def writable(self, device_id: str) -> frozenset[str] | None:
        g = device_id.rpartition("/")[0]
        return self._setpoints(g) if g in self.groups else None

    def read_setpoints(self, device_ids=None) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for g, (vals, _, a) in self.read_groups().items():
            names = [n for n in self._setpoints(g) if n in vals]
            for i in np.flatnonzero(a):
                if device_ids is None or f"{g}/{i}" in device_ids:
                    out[f"{g}/{i}"] = {n: float(vals[n][i]) for n in names if np.isfinite(vals[n][i])}
        return out

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        g, _, i = device_id.rpartition("/")
        try:  # an element of a telemetry device ('rtu/trafo0', 'rtu/cap0'): the port decides
            self.port.write(g, setpoint, int(i) if i.isdigit() else i, float(value))
        except ValueError:
            self.refused += 1
            return False
        self.writes += 1
        return True

    def status(self) -> dict[str, DeviceStatus]:
        t = self.clock.now()
        out = {}
        for g, a in self._avail().items():
            if g not in self.groups:
                continue
            for i, ok in enumerate(np.asarray(a, bool)):
                out[f"{g}/{i}"] = DeviceStatus(bool(ok), "" if ok else "offline", t if ok else None)
        return out
