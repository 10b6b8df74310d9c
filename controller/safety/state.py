"""What the safety gate needs to know about the world: `GridSnapshot`.

A snapshot is the controller's estimate of the feeder at time `t_s`: the per-bus load that no
managed device explains (from the state estimator, or metered), plus every managed device's
bus, current P/Q, ratings and the telemetry that tells how a setpoint turns into power
(PV available power, flexible-load base demand, EV plugged in). All arrays, one row per device.

How it is built from the controller's fleet state:

    snap = GridSnapshot.from_fleet_state(fleet_state, base_bus, base_p_kw, base_q_kvar,
                                         now_s=clock.now())
    result = gate.check(commands, snap)

The runtime builds one every cycle (controller/safety/base_load.py) with a `SnapshotBuilder`,
which gives the same snapshot while keeping the fleet's fixed part (ids, kinds, buses, ratings)
between cycles.

`fleet_state` is `controller.state.FleetState` (duck-typed: groups with .group, .kind, .ids,
.bus, .ratings, .values, .t, .usable()); base_* come from `grid_models.estimation`
(`StateEstimate.base_load(...)`) or, without an estimator, from the feeder's metered or
forecast loads. `t_s` is the oldest telemetry time used, so the stale-state guard sees the
true age of the picture.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.kinds import CONTROLLABLE


# device telemetry the gate's injection models read (kinds' `injection`): what a device can
# still do (PV available power, flex baseline, EV plugged in and the energy it still needs)
GATE_TELEMETRY = ("p_avail_kw", "p_base_kw", "connected", "e_need_kwh")


@dataclass
class GridSnapshot:
    """Estimated feeder state plus managed devices as arrays (see module docstring).

    Device arrays share one row order (`device_ids`). Ratings and telemetry are the ones the
    device kinds (controller.kinds) name; NaN when unknown.
    """

    t_s: float  # time of the data (controller clock, s)
    now_s: float  # time the gate is asked (controller clock, s)
    base_bus: np.ndarray  # pandapower bus indices with base load
    base_p_kw: np.ndarray  # load not explained by managed devices, load convention
    base_q_kvar: np.ndarray
    device_ids: list[str] = field(default_factory=list)
    kind: np.ndarray = field(default_factory=lambda: np.zeros(0, "U10"))
    bus: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    p_kw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    q_kvar: np.ndarray = field(default_factory=lambda: np.zeros(0))
    available: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    ratings: dict[str, np.ndarray] = field(default_factory=dict)
    telemetry: dict[str, np.ndarray] = field(default_factory=dict)
    trafo_tap_pos: dict[int, int] = field(default_factory=dict)  # as the RTU reports them
    shunt_step: dict[int, int] = field(default_factory=dict)  # capacitor steps, as the RTU reports them
    basis: str = "allocation"  # where base_* come from: "estimate" (WLS) or "allocation" (head meter)
    _row: dict[str, int] | None = None
    _kinds: list[str] | None = None

    @property
    def age_s(self) -> float:
        return float(self.now_s - self.t_s)

    @property
    def n(self) -> int:
        return len(self.device_ids)

    def row(self, device_id: str) -> int | None:
        return self.row_map().get(device_id)

    def row_map(self) -> dict[str, int]:
        """{device id: row} (built once per snapshot, or kept by `SnapshotBuilder`)."""
        if self._row is None:
            self._row = {d: i for i, d in enumerate(self.device_ids)}
        return self._row

    def kind_names(self) -> list[str]:
        """`kind` as a list of str (per-command lookups in the gate without numpy scalars)."""
        if self._kinds is None:
            self._kinds = self.kind.tolist()
        return self._kinds

    def rating(self, name: str) -> np.ndarray:
        r = self.ratings.get(name)
        return np.full(self.n, np.nan) if r is None else r

    def tel(self, name: str) -> np.ndarray:
        r = self.telemetry.get(name)
        return np.full(self.n, np.nan) if r is None else r

    def rows_of(self, rows) -> SnapshotRows:
        return SnapshotRows(self, rows)

    # --- builders -------------------------------------------------------------------------
    @classmethod
    def from_groups(cls, t_s: float, now_s: float, base_bus, base_p_kw, base_q_kvar, groups,
                    trafo_tap_pos=None) -> GridSnapshot:
        """groups: iterable of dicts with name, kind, bus, p_kw, q_kvar and optional
        available, ratings (dict of arrays), telemetry (dict of arrays), ids."""
        ids, kind, bus, p, q, av = [], [], [], [], [], []
        rat_parts: dict[str, list] = {}
        tel_parts: dict[str, list] = {}
        groups = list(groups)
        sizes = [len(np.atleast_1d(g["bus"])) for g in groups]
        for gi, g in enumerate(groups):
            n = sizes[gi]
            ids += list(g.get("ids") or [f"{g['name']}/{i}" for i in range(n)])
            kind.append(np.full(n, g["kind"], "U10"))
            bus.append(np.asarray(g["bus"], np.int64))
            p.append(np.nan_to_num(np.asarray(g["p_kw"], float)))
            q.append(np.nan_to_num(np.asarray(g.get("q_kvar", np.zeros(n)), float)))
            av.append(np.asarray(g.get("available", np.ones(n, bool)), bool))
            for store, src in ((rat_parts, g.get("ratings") or {}), (tel_parts, g.get("telemetry") or {})):
                for k in src:
                    store.setdefault(k, [None] * len(groups))
                    store[k][gi] = np.asarray(src[k], float)

        def cat(parts):
            return {k: np.concatenate([a if a is not None else np.full(sizes[i], np.nan)
                                       for i, a in enumerate(v)]) for k, v in parts.items()}

        def join(lst, dtype):
            return np.concatenate(lst).astype(dtype) if lst else np.zeros(0, dtype)

        return cls(float(t_s), float(now_s), np.asarray(base_bus, np.int64),
                   np.asarray(base_p_kw, float), np.asarray(base_q_kvar, float), ids,
                   join(kind, "U10"), join(bus, np.int64), join(p, float), join(q, float),
                   join(av, bool), cat(rat_parts), cat(tel_parts), dict(trafo_tap_pos or {}))

    @classmethod
    def from_fleet_state(cls, fleet_state, base_bus, base_p_kw, base_q_kvar, now_s: float,
                         trafo_tap_pos=None) -> GridSnapshot:
        """From the runtime's `controller.state.FleetState` (good-quality values only;
        devices without a good p_kw reading are marked unavailable). `SnapshotBuilder`
        gives the same snapshot every cycle without rebuilding the fleet's fixed part."""
        groups, t_oldest = [], np.inf
        for g in fleet_state.groups.values():
            if g.kind not in CONTROLLABLE:
                continue
            p = g.get("p_kw")
            q = g.get("q_kvar")
            tel = {k: g.get(k) for k in GATE_TELEMETRY if k in g.values}
            available = g.usable() & np.isfinite(p)
            if g.t is not None and np.isfinite(g.t[available]).any():
                t_oldest = min(t_oldest, float(np.nanmin(g.t[available])))
            groups.append({"name": g.group, "kind": g.kind, "ids": g.ids, "bus": g.bus, "p_kw": p,
                               "q_kvar": np.nan_to_num(q), "available": available,
                               "ratings": g.ratings, "telemetry": tel})
        t_s = fleet_state.t if not np.isfinite(t_oldest) else t_oldest
        return cls.from_groups(t_s, now_s, base_bus, base_p_kw, base_q_kvar, groups, trafo_tap_pos)


def finite_copy(x) -> np.ndarray:
    """np.nan_to_num(np.asarray(x, float)) as a new array (NaN 0, +-inf the largest finite
    float), without nan_to_num's overhead: it runs once per group and cycle."""
    a = np.array(x, dtype=float)
    if not np.isfinite(a).all():
        a[np.isnan(a)] = 0.0
        a[a == np.inf] = _FMAX
        a[a == -np.inf] = -_FMAX
    return a


_FMAX = np.finfo(float).max


class SnapshotBuilder:
    """`GridSnapshot.from_fleet_state`, equal field by field, for a controller that builds one
    snapshot per cycle from the same fleet: the parts that only change with the fleet (device
    ids and rows, kinds, buses, ratings) are kept while every controllable group has the same
    name, kind, ids, buses and ratings as when they were built (compared each call: a device
    added or removed, a bus or a rating changed rebuilds them); p/q, availability, telemetry
    and the data time are read every call."""

    def __init__(self):
        self._key: list | None = None  # per group: (name, kind, ids copy, bus bytes, ratings bytes)
        self._fixed: dict | None = None

    @staticmethod
    def _same(key, groups) -> bool:
        if key is None or len(key) != len(groups):
            return False
        for (name, kind, ids, bus, ratings), g in zip(key, groups):
            if (g.group != name or g.kind != kind or g.ids != ids or np.asarray(g.bus).tobytes() != bus
                    or g.ratings.keys() != ratings.keys()):
                return False
            for k, r in ratings.items():
                if np.asarray(g.ratings[k], float).tobytes() != r:
                    return False
        return True

    def _build_fixed(self, groups) -> None:
        ref = GridSnapshot.from_groups(0.0, 0.0, [], [], [], [
            {"name": g.group, "kind": g.kind, "ids": g.ids, "bus": g.bus, "p_kw": np.zeros(g.n),
             "ratings": g.ratings} for g in groups])
        self._fixed = {"ids": ref.device_ids, "kind": ref.kind, "bus": ref.bus, "ratings": ref.ratings,
                       "row": {d: i for i, d in enumerate(ref.device_ids)}, "kinds": ref.kind.tolist(),
                       "sizes": [len(np.atleast_1d(g.bus)) for g in groups]}
        self._key = [(g.group, g.kind, list(g.ids), np.asarray(g.bus).tobytes(),
                      {k: np.asarray(r, float).tobytes() for k, r in g.ratings.items()}) for g in groups]

    def build(self, fleet_state, base_bus, base_p_kw, base_q_kvar, now_s: float) -> GridSnapshot:
        groups = [g for g in fleet_state.groups.values() if g.kind in CONTROLLABLE]
        if not self._same(self._key, groups):
            self._build_fixed(groups)
        fx = self._fixed
        t_oldest = np.inf
        p, q, av = [], [], []
        tel_parts: dict[str, list] = {}
        for gi, g in enumerate(groups):
            pg = g.get("p_kw")
            a = g.usable() & np.isfinite(pg)
            if g.t is not None and np.isfinite(g.t[a]).any():
                t_oldest = min(t_oldest, float(np.nanmin(g.t[a])))
            p.append(finite_copy(pg))
            q.append(finite_copy(g.get("q_kvar")))
            av.append(a)
            for k in GATE_TELEMETRY:
                if k in g.values:
                    tel_parts.setdefault(k, [None] * len(groups))[gi] = np.asarray(g.get(k), float)
        sizes = fx["sizes"]
        tel = {k: np.concatenate([a if a is not None else np.full(sizes[i], np.nan) for i, a in enumerate(v)])
               for k, v in tel_parts.items()}

        def join(lst, dtype):
            return np.concatenate(lst).astype(dtype) if lst else np.zeros(0, dtype)

        t_s = fleet_state.t if not np.isfinite(t_oldest) else t_oldest
        return GridSnapshot(float(t_s), float(now_s), np.asarray(base_bus, np.int64),
                            np.asarray(base_p_kw, float), np.asarray(base_q_kvar, float), fx["ids"],
                            fx["kind"].copy(), fx["bus"].copy(), join(p, float), join(q, float),
                            join(av, bool), {k: r.copy() for k, r in fx["ratings"].items()}, tel, {},
                            _row=fx["row"], _kinds=fx["kinds"])


class SnapshotRows:
    """Some rows of a snapshot seen as a device-kind view (`n`, `get`, `rating`, `usable`),
    so the gate asks controller.kinds the same way the cycle does with a GroupState."""

    def __init__(self, st: GridSnapshot, rows):
        self.st = st
        self.rows = np.asarray(rows, np.int64)
        self.n = len(self.rows)

    def get(self, name: str) -> np.ndarray:
        return self.st.tel(name)[self.rows]

    def rating(self, name: str, default: float = np.nan) -> np.ndarray:
        r = self.st.ratings.get(name)
        return np.full(self.n, default) if r is None else r[self.rows]

    def usable(self) -> np.ndarray:
        return self.st.available[self.rows]
