"""The controller's picture of its fleet: per group, arrays of the latest telemetry with a
quality code per value, plus availability.

Links return per-device `Value`s (the DeviceLink contract); the cycle converts them once into
these arrays so allocation, dispatch and the gate work on numpy, never on per-device objects.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.links.base import DeviceInfo, DeviceStatus, Quality, Value

# quality codes held in the arrays
Q_GOOD, Q_STALE, Q_INVALID, Q_MISSING, Q_SUSPECT = 0, 1, 2, 3, 4  # suspect: controller/quality.py
Q_CODE = {Quality.GOOD: Q_GOOD, Quality.STALE: Q_STALE, Quality.INVALID: Q_INVALID,
          Quality.MISSING: Q_MISSING, Quality.SUSPECT: Q_SUSPECT}
Q_NAME = {v: k.value for k, v in Q_CODE.items()}


@dataclass
class GroupState:
    """One device group (same kind, same link): arrays indexed like `ids`."""

    group: str
    kind: str
    ids: list[str]
    bus: np.ndarray
    ratings: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, np.ndarray] = field(default_factory=dict)  # NaN where not usable
    quality: dict[str, np.ndarray] = field(default_factory=dict)  # Q_* codes
    t: np.ndarray | None = None  # time of the reading per device
    available: np.ndarray | None = None  # link says the device answers
    in_service: np.ndarray | None = None  # operator did not force it out of service

    @property
    def n(self) -> int:
        return len(self.ids)

    def usable(self) -> np.ndarray:
        """Devices the controller may dispatch: answering and in service."""
        ok = np.ones(self.n, bool)
        if self.available is not None:
            ok &= self.available
        if self.in_service is not None:
            ok &= self.in_service
        return ok

    def get(self, name: str, good_only: bool = True) -> np.ndarray:
        """Telemetry array `name`; NaN where missing (or not good, when good_only)."""
        v = self.values.get(name)
        if v is None:
            return np.full(self.n, np.nan)
        if good_only:
            q = self.quality[name]
            return np.where(q == Q_GOOD, v, np.nan)
        return v

    def rating(self, name: str, default: float = np.nan) -> np.ndarray:
        r = self.ratings.get(name)
        return np.full(self.n, default) if r is None else r


@dataclass
class FleetState:
    t: float
    groups: dict[str, GroupState]

    def device_count(self) -> int:
        return sum(g.n for g in self.groups.values())

    def summary(self) -> dict:
        """Per group: count, available, total p_kw (good values only) — JSON for the API."""
        out = {}
        for name, g in self.groups.items():
            p = g.get("p_kw")
            out[name] = {"kind": g.kind, "count": g.n, "usable": int(g.usable().sum()),
                         "p_kw": round(float(np.nansum(p)), 3),
                         "p_kw_good": int(np.isfinite(p).sum()),
                         "telemetry_only": g.kind in TELEMETRY_KINDS}
            if "soc_kwh" in g.values:  # fleet SOC (good values only), for the dashboard's SOC chart
                soc, cap = g.get("soc_kwh"), g.ratings.get("e_cap_kwh")
                ok = np.isfinite(soc)
                out[name]["soc_kwh"] = round(float(soc[ok].sum()), 3) if ok.any() else None
                if cap is not None and ok.any() and np.nansum(cap[ok]) > 0:
                    out[name]["soc_pct"] = round(100.0 * float(soc[ok].sum() / np.nansum(cap[ok])), 2)
        return out


TELEMETRY_KINDS = ("meter", "rtu")  # measure the feeder, never dispatched: not fleet classes


def group_infos(infos: list[DeviceInfo]) -> dict[str, list[DeviceInfo]]:
    by: dict[str, list[DeviceInfo]] = {}
    for d in infos:
        by.setdefault(d.group, []).append(d)
    return by


def empty_group(group: str, infos: list[DeviceInfo]) -> GroupState:
    kind = infos[0].kind if infos else "unknown"
    names = sorted({k for d in infos for k in d.ratings})
    ratings = {k: np.array([d.ratings.get(k, np.nan) for d in infos], float) for k in names}
    bus = np.array([-1 if d.bus is None else d.bus for d in infos], np.int64)
    n = len(infos)
    return GroupState(group, kind, [d.device_id for d in infos], bus, ratings,
                      available=np.ones(n, bool), in_service=np.ones(n, bool),
                      t=np.full(n, np.nan))


def fill_from_values(g: GroupState, readings: dict[str, dict[str, Value]],
                     status: dict[str, DeviceStatus]) -> None:
    """Copy per-device Values of this group into its arrays (one pass, per cycle)."""
    names = sorted({k for i in g.ids for k in readings.get(i, {})})
    g.values = {k: np.full(g.n, np.nan) for k in names}
    g.quality = {k: np.full(g.n, Q_MISSING, np.int8) for k in names}
    g.t = np.full(g.n, np.nan)
    for j, dev in enumerate(g.ids):
        vals = readings.get(dev)
        st = status.get(dev)
        g.available[j] = True if st is None else st.available
        if not vals:
            continue
        for k, v in vals.items():
            g.values[k][j] = v.value
            g.quality[k][j] = Q_CODE[Quality(v.quality)]
            g.t[j] = v.t if np.isnan(g.t[j]) else max(g.t[j], v.t)
