"""The gate's per-cycle fast paths give what the plain code gives: `SnapshotBuilder` (the fleet's
fixed part of a GridSnapshot kept between cycles) equals `GridSnapshot.from_fleet_state` field by
field, also right after a device is added or removed, moves bus, changes a rating or a group
changes kind; the vectorised ramp limit equals the per-command loop it replaced."""

from types import SimpleNamespace

import numpy as np
import pytest

from controller.safety.gate import SafetyConfig, SafetyGate
from controller.safety.state import GridSnapshot, SnapshotBuilder, finite_copy
from controller.state import Q_GOOD, Q_SUSPECT, FleetState, GroupState


def group(name, kind, n, bus0, rng, ratings=("p_max_kw",), tel=("p_avail_kw",)):
    g = GroupState(name, kind, [f"{name}/{i}" for i in range(n)], np.arange(n, dtype=np.int64) % 5 + bus0,
                   ratings={r: rng.uniform(3, 10, n) for r in ratings})
    refresh(g, rng, tel)
    return g


def refresh(g, rng, tel=None):
    """New readings: values, some NaN, some suspect; availability and reading times."""
    n = g.n
    names = ["p_kw", "q_kvar", *(tel if tel is not None else [k for k in g.values if k not in ("p_kw", "q_kvar")])]
    g.values = {k: rng.normal(0, 5, n) for k in names}
    g.values["q_kvar"][rng.random(n) < 0.3] = np.nan
    g.values["p_kw"][rng.random(n) < 0.1] = np.inf
    g.quality = {k: np.where(rng.random(n) < 0.1, Q_SUSPECT, Q_GOOD).astype(np.int8) for k in names}
    g.available = rng.random(n) > 0.1
    g.t = rng.uniform(0, 60, n)


def assert_same(a: GridSnapshot, b: GridSnapshot):
    for f in ("t_s", "now_s", "device_ids", "basis", "trafo_tap_pos", "shunt_step"):
        assert getattr(a, f) == getattr(b, f), f
    for f in ("base_bus", "base_p_kw", "base_q_kvar", "kind", "bus", "p_kw", "q_kvar", "available"):
        x, y = getattr(a, f), getattr(b, f)
        assert x.dtype == y.dtype and np.array_equal(x, y), f
    for f in ("ratings", "telemetry"):
        x, y = getattr(a, f), getattr(b, f)
        assert list(x) == list(y), f
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k], equal_nan=True), (f, k)
    assert a.row_map() == b.row_map() and a.kind_names() == b.kind_names()


def test_snapshot_builder_equals_from_fleet_state_and_follows_fleet_changes():
    rng = np.random.default_rng(4)
    fleet = FleetState(0.0, {"pv": group("pv", "pv", 6, 1, rng, ("s_rated_kva", "p_peak_kw")),
                             "bat": group("bat", "battery", 4, 3, rng, tel=()),
                             "meter": group("meter", "meter", 1, 0, rng, ratings=(), tel=()),
                             "ev": group("ev", "ev", 3, 2, rng, tel=("connected", "e_need_kwh"))})
    b = SnapshotBuilder()
    base = (np.array([1, 2]), np.array([10.0, 20.0]), np.array([1.0, 2.0]))

    def check(now):
        assert_same(b.build(fleet, *base, now_s=now), GridSnapshot.from_fleet_state(fleet, *base, now_s=now))

    def step(now):  # a cycle: new readings everywhere, then compare
        for g in fleet.groups.values():
            refresh(g, rng)
        fleet.t = now
        check(now)

    for k in range(3):
        step(60.0 * k)
    kept = b._fixed
    step(200.0)
    assert b._fixed is kept  # same fleet: the fixed part is reused
    g = fleet.groups["pv"]  # a device joins the group
    g.ids.append("pv/6")
    g.bus = np.r_[g.bus, 9]
    g.ratings = {k: np.r_[v, 7.0] for k, v in g.ratings.items()}
    step(260.0)
    assert b._fixed is not kept
    fleet.groups["bat"].bus[2] = 8  # a device moves bus (in place)
    step(320.0)
    fleet.groups["ev"].ratings["p_max_kw"][0] = 22.0  # a rating changes in place
    step(380.0)
    fleet.groups["ev"].ratings["s_rated_kva"] = np.full(3, 11.0)  # a rating appears
    step(440.0)
    del fleet.groups["bat"]  # a group leaves
    step(500.0)
    fleet.groups["bat"] = group("bat", "flex_load", 2, 4, rng, tel=("p_base_kw",))  # back, other kind
    step(560.0)
    fleet.groups["pv"].ids[0] = "pv/renamed"
    step(620.0)


def test_finite_copy_is_nan_to_num():
    x = np.array([1.0, np.nan, np.inf, -np.inf, -2.0])
    y = finite_copy(x)
    assert np.array_equal(y, np.nan_to_num(x)) and y is not x and np.isnan(x[1])


def ramp_loop(gate, commands, rows, kinds, size, lo, hi, d_req, now):
    """The per-command ramp loop the gate had (reference)."""
    cfg = gate.cfg
    cut = np.zeros(len(d_req), bool)
    for j, (i, r) in enumerate(zip(rows["idx"], rows["row"])):
        frac = cfg.ramp_frac_per_s.get(kinds[r])
        if frac is None:
            continue
        dt = now - gate._last_sent_t.get(commands[i].device_id, now - cfg.default_dt_s)
        with np.errstate(invalid="ignore"):
            step = frac * size[j] * max(dt, 0.0)
        lo_r, hi_r = max(lo[j], -step), min(hi[j], step)
        if lo_r > hi_r:
            lo_r = hi_r = -step if hi[j] < -step else step
        if not (lo_r - 1e-9 <= d_req[j] <= hi_r + 1e-9):
            cut[j] = True
            d_req[j] = min(max(d_req[j], lo_r), hi_r)
        lo[j], hi[j] = lo_r, hi_r
    return cut


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_ramp_limit_equals_the_loop(seed):
    rng = np.random.default_rng(seed)
    n = 200
    kinds = list(rng.choice(["pv", "battery", "ev", "flex_load", "tcl"], n))
    cfg = SafetyConfig(ramp_frac_per_s={"pv": 0.1, "battery": 0.02, "ev": 0.0, "flex_load": 1})
    commands = [SimpleNamespace(device_id=f"d{j % 150}") for j in range(n)]
    now = 1000.0
    last = {f"d{j}": now - rng.choice([0.0, 1.0, 30.0, 120.0, -5.0]) for j in range(0, 150, 2)}
    gate = SimpleNamespace(cfg=cfg, _last_sent_t=last)
    rows = {"idx": list(range(n)), "row": list(range(n))}
    size = rng.choice([5.0, 11.0, np.inf, 0.0], n)
    a, b = np.sort(rng.normal(0, 20, (2, n)), axis=0)
    lo, hi = np.where(rng.random(n) < 0.1, 30.0, a), np.where(rng.random(n) < 0.1, -30.0, b)  # some out of reach
    d_req = np.where(rng.random(n) < 0.5, lo, hi) + rng.normal(0, 1e-9, n)
    ref = [lo.copy(), hi.copy(), d_req.copy()]
    cut_ref = ramp_loop(gate, commands, rows, kinds, size, *ref, now)
    cut = SafetyGate._ramp_limits(gate, commands, rows, kinds, size, lo, hi, d_req, now)
    assert np.array_equal(cut, cut_ref) and cut.any() and not cut.all()
    for x, y in zip((lo, hi, d_req), ref):
        assert np.array_equal(x, y, equal_nan=True)
