"""The unmanaged load the safety gate must assume at each bus.

Load allocation from head metering: the feeder model's nominal loads scaled by one factor so
that, together with the managed devices' metered power and the feeder's own generators (PV at
the managed PV fleet's measured output per kW, other kinds at an expected share of their
rating; never nameplate), they explain the power measured at the feeder head. Without a head
meter the nominal loads are used unscaled.

Where the controller's telemetry makes the feeder observable (the RTU reports bus voltages
for at least `min_v_share` of the buses and the head meter answers), the WLS state estimate
(grid_models.estimation, with bad-data removal) replaces the nominal shape: the per-bus load
the managed devices do not explain, re-estimated every `every_s` or as soon as the measured
voltages move by `drift_pu`, and moved with the head meter in between. Every snapshot says
which basis it used (`GridSnapshot.basis`: "estimate" or "allocation").
"""

from __future__ import annotations

import numpy as np

from controller.safety.state import GridSnapshot, SnapshotBuilder, finite_copy
from controller.state import Q_GOOD


class HeadMeterLoadAllocation:
    """The feeder model's loads, scaled by one factor so that with the managed devices' metered
    power and the feeder's own generators they explain the head meter. The generators (sgens,
    which no link measures) are put at what telemetry suggests, never at nameplate: PV at the
    managed PV fleet's available output per kW of its rating (`pv_pu`; the last figure while no
    PV answers, `other_sgen_pu` before any), other kinds (wind, CHP) at `other_sgen_pu` of their
    rating, an expected output. `sgen_basis` says which was used."""

    def __init__(self, net, max_scale: float = 3.0, other_sgen_pu: float = 0.5):
        loads = net.load[net.load.in_service]
        gens = net.sgen[net.sgen.in_service]
        self.load_bus = loads.bus.to_numpy().astype(np.int64)
        self.load_p_kw, self.load_q_kvar = loads.p_mw.to_numpy() * 1000.0, loads.q_mvar.to_numpy() * 1000.0
        self.gen_bus = gens.bus.to_numpy().astype(np.int64)
        self.gen_p_kw, self.gen_q_kvar = gens.p_mw.to_numpy() * 1000.0, gens.q_mvar.to_numpy() * 1000.0  # rated
        self.gen_is_pv = gens.type.astype(str).str.upper().str.contains("PV").to_numpy()
        self.bus = np.concatenate([self.load_bus, self.gen_bus])
        self.nominal_kw = float(self.load_p_kw.sum())
        self.max_scale = max_scale
        self.other_sgen_pu = other_sgen_pu
        self.last_scale = 1.0
        self.pv_pu: float | None = None
        self.sgen_basis: dict = {}
        self.snapshots = SnapshotBuilder()  # GridSnapshot.from_fleet_state, the fleet's fixed part kept

    @staticmethod
    def fleet_pv_pu(state) -> float | None:
        """Available PV output per kW of rating over the managed PV that answers (p_avail_kw,
        else its output, over p_peak_kw, else s_rated_kva); None when no PV answers."""
        avail, rating = 0.0, 0.0
        for g in state.groups.values():
            if g.kind != "pv":
                continue
            a = g.get("p_avail_kw")
            a = np.where(np.isfinite(a), a, -g.get("p_kw"))
            r = g.ratings.get("p_peak_kw", np.full(g.n, np.nan))
            r = np.where(np.isfinite(r) & (r > 0), r, g.ratings.get("s_rated_kva", np.full(g.n, np.nan)))
            ok = g.usable() & np.isfinite(a) & np.isfinite(r) & (r > 0)
            avail += float(np.clip(a[ok], 0.0, None).sum())
            rating += float(r[ok].sum())
        return avail / rating if rating > 0 else None

    def gens(self, state) -> tuple[np.ndarray, np.ndarray]:
        """(generation kW, kvar) of the feeder's own generators, generation positive."""
        pv = self.fleet_pv_pu(state)
        if pv is not None:
            self.pv_pu = float(np.clip(pv, 0.0, 1.2))
        pv_pu = self.pv_pu if self.pv_pu is not None else self.other_sgen_pu
        pu = np.where(self.gen_is_pv, pv_pu, self.other_sgen_pu)
        self.sgen_basis = {"pv_pu": round(pv_pu, 4), "pv_from": "fleet" if pv is not None else
                           ("last" if self.pv_pu is not None else "default"), "other_pu": self.other_sgen_pu}
        return self.gen_p_kw * pu, self.gen_q_kvar * pu

    def scale(self, state, gen_kw: float | None = None) -> float:
        meters = [g for g in state.groups.values() if g.kind == "meter"]
        if not meters or self.nominal_kw <= 0:
            return 1.0
        head = np.nansum(meters[0].get("p_kw"))
        if not np.isfinite(head) or not meters[0].usable().any():
            return self.last_scale  # meter lost: keep the last allocation
        der = sum(float(np.nansum(g.get("p_kw"))) for g in state.groups.values()
                  if g.kind not in ("meter", "rtu") and "p_kw" in g.values)
        if gen_kw is None:
            gen_kw = float(self.gens(state)[0].sum())
        self.last_scale = float(np.clip((head - der + gen_kw) / self.nominal_kw, 0.0, self.max_scale))
        return self.last_scale

    def snapshot(self, state, now_s: float) -> GridSnapshot:
        gp, gq = self.gens(state)
        k = self.scale(state, float(gp.sum()))
        p = np.concatenate([self.load_p_kw * k, -gp])
        q = np.concatenate([self.load_q_kvar * k, -gq])
        return self.snapshots.build(state, self.bus, p, q, now_s=now_s)


class EstimatedBaseLoad:
    """The gate's unmanaged load from the state estimate when observable, else the head-meter
    allocation (see module docstring)."""

    def __init__(self, net, every_s: float = 4 * 3600.0, drift_pu: float = 0.03, min_v_share: float = 0.5,
                 prefer_pu: float = 0.001):
        self.net = net
        self.prefer_pu = prefer_pu
        self.alloc = HeadMeterLoadAllocation(net)
        self.bus_index = net.bus.index.to_numpy()
        self._v_keys = [f"v_pu.{k}" for k in range(len(self.bus_index))]  # the RTU's bus voltage points
        self.every_s, self.drift_pu, self.min_v_share = every_s, drift_pu, min_v_share
        self.se = None
        self.gate = None  # set by make_gate: its power flow judges which basis explains the RTU
        self.use_estimate = True
        self.est = None  # (t, v measured, head kW, device kW, bus, p, q) of the last estimate
        self._steps_est = None  # RTU tap/capacitor steps the last estimate was made at
        self.last: dict = {"basis": "allocation"}

    def _measurements(self, state):
        """(v vector, head kW, head kvar) from the RTU and head meter, or None (not observable)."""
        rtu = next((g for g in state.groups.values() if g.kind == "rtu"), None)
        meter = next((g for g in state.groups.values() if g.kind == "meter"), None)
        if rtu is None or meter is None:
            return None
        head = float(np.nansum(meter.get("p_kw"))) if np.isfinite(meter.get("p_kw")).any() else np.nan
        head_q = float(np.nansum(meter.get("q_kvar")))
        n = len(self.bus_index)
        vals, qual = rtu.values, rtu.quality  # rtu.get(key)[0]: the value where its quality is good
        v = np.array([(vals[k][0] if qual[k][0] == Q_GOOD else np.nan) if k in vals else np.nan
                      for k in self._v_keys], float)
        ok = np.isfinite(v)
        if not np.isfinite(head) or ok.sum() < self.min_v_share * n:
            return None
        return v, head, head_q

    def _measurement_set(self, v, head, head_q):
        """The estimator's Measurements: the RTU's good voltages, the head meter at the slack
        (built only when an estimate is due)."""
        from grid_models.estimation import Measurements

        ok = np.isfinite(v)
        slack = np.asarray(self.net.ext_grid.bus.to_numpy()[:1], np.int64)
        return Measurements(v_bus=self.bus_index[ok], v_pu=v[ok], pq_bus=slack,
                            p_kw=np.array([-head]), q_kvar=np.array([-head_q]))

    @staticmethod
    def _devices(state):
        bus, p, q = [], [], []
        for g in state.groups.values():
            if g.kind in ("meter", "rtu") or "p_kw" not in g.values:
                continue
            bus.append(g.bus)
            p.append(finite_copy(g.get("p_kw")))
            q.append(finite_copy(g.get("q_kvar")))
        if not bus:
            return np.zeros(0, np.int64), np.zeros(0), np.zeros(0)
        return np.concatenate(bus), np.concatenate(p), np.concatenate(q)

    def snapshot(self, state, now_s: float) -> GridSnapshot:
        """The gate's snapshot, with the tap positions and capacitor steps the RTU reports."""
        steps = rtu_steps(self.net, state)
        snap = self._snapshot(state, now_s, steps)
        snap.trafo_tap_pos, snap.shunt_step = steps
        if self.last.get("basis") == "allocation":
            self.last = {**self.last, "sgen": self.alloc.sgen_basis}  # where the own generators were put
        return snap

    def _snapshot(self, state, now_s: float, steps) -> GridSnapshot:
        got = self._measurements(state)
        if got is None:
            snap = self.alloc.snapshot(state, now_s)
            self.last = {"basis": "allocation", "why": "not observable from the RTU and head meter"}
            return snap
        v, head, head_q = got
        d_bus, d_p, d_q = self._devices(state)
        due = (self.est is None or now_s - self.est[0] >= self.every_s
               or np.nanmax(np.abs(v - self.est[1])) > self.drift_pu or steps != self._steps_est)
        if due:
            from grid_models.estimation import EstimationError, StateEstimator

            if self.se is None:
                self.se = StateEstimator(self.net, device_buses=np.unique(d_bus[d_bus >= 0]))
            self._steps_est = steps
            for (table, column), reported in zip((("trafo", "tap_pos"), ("shunt", "step")), steps):
                for idx, pos in reported.items():  # the estimator's model at the RTU's tap/capacitor steps
                    self.se.net[table].at[idx, column] = pos
            try:
                e = self.se.run(self._measurement_set(v, head, head_q), pseudo_scale=self.alloc.scale(state))
            except EstimationError as err:
                self.last = {"basis": "allocation", "why": str(err)[:200]}
                return self.alloc.snapshot(state, now_s)
            bus, p, q = e.base_load(d_bus, d_p, d_q)
            self.est = (now_s, v, head, float(d_p.sum()), bus, p, q)
            use, err = self._explains_better(state, now_s, v, e.removed)
            self.last = {"basis": "estimate" if use else "allocation", "t": now_s,
                         "bad_data": e.bad_data_detected, "removed": e.removed,
                         "n_measurements": e.n_measurements, "v_rms_error_pu": err}
            self.use_estimate = use
        if not self.use_estimate:  # the allocation explains the RTU's voltages better
            self.last = {**self.last, "basis": "allocation"}
            return self.alloc.snapshot(state, now_s)
        return self._estimate_snapshot(state, now_s, head, d_p)

    def _estimate_snapshot(self, state, now_s, head, d_p) -> GridSnapshot:
        t_est, _, head0, der0, bus, p, q = self.est
        # between estimates: the unmanaged load moves with what the head meter sees beyond the devices
        load = np.maximum(p, 0.0)
        d = (head - head0) - (float(d_p.sum()) - der0)
        p = p + (d * load / load.sum() if load.sum() > 1e-9 else 0.0)
        snap = self.alloc.snapshots.build(state, bus, p, q, now_s=now_s)
        snap.basis = "estimate"
        self.last = {**self.last, "basis": "estimate", "age_s": round(now_s - t_est, 1)}
        return snap

    def _explains_better(self, state, now_s, v, removed) -> tuple[bool, dict]:
        """Does the gate's power flow on the estimate's load reproduce the RTU's voltages
        (good channels; bad data removed) about as well as on the allocation (within
        `prefer_pu` RMS: the measured basis wins a tie)? Only then is the estimate used: a
        poorly conditioned estimate never makes the gate see less."""
        if self.gate is None:
            return True, {}
        bad = {r["element"] for r in removed if r["type"] == "v"}
        keep = np.isfinite(v) & ~np.isin(self.bus_index, list(bad))
        pos = {int(b): i for i, b in enumerate(self.gate.pf.bus_index)}
        rows = [pos[int(b)] for b in self.bus_index[keep] if int(b) in pos]
        meas = v[keep][[int(b) in pos for b in self.bus_index[keep]]]
        err = {}
        for name, snap in (("estimate", self._estimate_snapshot(state, now_s, *self._head_der(state))),
                           ("allocation", self.alloc.snapshot(state, now_s))):
            snap.trafo_tap_pos, snap.shunt_step = self._steps_est or ({}, {})
            op = self.gate.operating_point(snap)
            err[name] = np.inf if op is None else float(np.sqrt(np.mean((op["res"].v_pu[rows] - meas) ** 2)))
        return err["estimate"] <= err["allocation"] + self.prefer_pu, {k: round(x, 5) for k, x in err.items()}

    def _head_der(self, state):
        meter = next(g for g in state.groups.values() if g.kind == "meter")
        return float(np.nansum(meter.get("p_kw"))), self._devices(state)[1]


def rtu_steps(net, state) -> tuple[dict, dict]:
    """({trafo index: tap position}, {shunt index: capacitor step}) as the RTU reports them
    (tap_pos.<k>, cap_step.<k>: k the element's position in the net's table); good values only."""
    out: tuple[dict, dict] = ({}, {})
    for g in state.groups.values():
        if g.kind != "rtu":
            continue
        for d, (name, table) in zip(out, (("tap_pos", net.trafo), ("cap_step", net.shunt))):
            for k, idx in enumerate(table.index):
                key = f"{name}.{k}"
                v = float(g.get(key)[0]) if key in g.values and g.usable()[0] else np.nan
                if np.isfinite(v):
                    d[idx] = v
    return out


def make_gate(net, limits, clock, config=None):
    """(SafetyGate, snapshot_fn) for a controller: the gate on the feeder model and the
    function turning the controller's FleetState into the gate's GridSnapshot (state estimate
    where observable, head-meter allocation otherwise); `snapshot_fn.base_load` says which."""
    from controller.safety.gate import SafetyGate
    from grid_models.estimation import warm_up

    warm_up()  # pandapower's WLS compiles numba kernels on first use: here, not in a cycle
    base = EstimatedBaseLoad(net)
    gate = SafetyGate(net, limits, config)
    base.gate = gate

    memo = {}

    def snapshot_fn(state):  # one snapshot per cycle (volt/VAR and the gate stage share it)
        key = (id(state), state.t, clock.now(),
               tuple(np.asarray(g.values["p_kw"]).tobytes() for g in state.groups.values() if "p_kw" in g.values))
        if memo.get("key") != key:
            memo["key"], memo["snap"] = key, base.snapshot(state, clock.now())
        return memo["snap"]

    snapshot_fn.base_load = base
    return gate, snapshot_fn
