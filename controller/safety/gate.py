"""SafetyGate: the only path from optimizer/DR/operator commands to `DeviceLink.write`.

`check(commands, snapshot)` validates a batch in order: stale-state guard, known device and
setpoint, device limits (clip), ramp limit per device, rate of change of the aggregate, then
the grid: each command becomes a P or Q injection change at its bus; a linear screen with
Jacobian sensitivities finds the batch's effect on every bus voltage and branch loading, an LP
(HiGHS) keeps as much of each command as the limits allow (scaling factor x in [0, 1] per
command, maximising kept kW/kvar), and a full AC power flow on the estimated state with the
(curtailed) batch applied confirms. If the confirmation still finds a violation the offending
bounds are tightened and the LP re-solved; as a last resort the worsening commands are dropped.
Every decision carries machine-readable reasons, e.g. "v_high:bus7", "line_overload:line3",
"trafo_overload:trafo0", "device_limit", "ramp_limit", "aggregate_ramp", "stale_state".
"""

from __future__ import annotations

import copy
import math
import re
import time
from dataclasses import dataclass, field

import numpy as np
import pandapower as pp

from controller.commands import Command, Decision, GateResult
from controller.kinds import KINDS
from controller.kinds import kind as kind_of
from controller.safety.lp import solve_lp
from controller.safety.state import GridSnapshot
from grid_models.lean_flow import FlowResult, LeanFlow
from grid_models.power_flow import PowerFlow
from grid_models.sensitivity import NetModel, linearize

TAP = "tap_pos"  # OLTC position of '<rtu>/trafo<k>'
CAP = "step"  # capacitor (shunt) step of '<rtu>/cap<k>'
STEPS = {TAP: ("trafo", "tap_pos", "trafo"), CAP: ("shunt", "step", "cap")}  # setpoint: table, column, id
_STEP_ID = re.compile(r"/(trafo|cap)(\d+)$")


def step_element(net, device_id: str, setpoint: str) -> tuple[str, int, str] | None:
    """(table, index label, column) that an RTU step command moves: '<rtu>/trafo<k>' tap_pos or
    '<rtu>/cap<k>' step, k the element's position in the net's table (as the RTU numbers its
    points); None when it names no such element."""
    m = _STEP_ID.search(device_id)
    if setpoint not in STEPS or m is None:
        return None
    table, column, prefix = STEPS[setpoint]
    k = int(m.group(2))
    tab = net[table]
    if m.group(1) != prefix or k >= len(tab):
        return None
    return table, tab.index[k], column


def step_range(net, table: str, idx) -> tuple[float, float] | None:
    """Allowed positions of a tap changer or capacitor bank; None when it has none that acts
    (pandapower 3.x ignores tap_pos without tap_changer_type; SimBench leaves it None)."""
    row = net[table].loc[idx]
    if table == "shunt":
        return 0.0, float(row.get("max_step", 1))
    kind = row.get("tap_changer_type", None)
    if not (isinstance(kind, str) and kind) or not np.isfinite(row.get("tap_step_percent", np.nan)):
        return None
    return float(row.tap_min), float(row.tap_max)


@dataclass
class SafetyConfig:
    """Margins and guards; ramps are fractions of the device rating per second."""

    v_margin_pu: float = 0.005  # screen/LP target stays this far inside the band
    loading_margin_pct: float = 2.0
    max_state_age_s: float = 180.0
    ramp_frac_per_s: dict = field(default_factory=lambda: {  # per kind (controller.kinds)
        k: v.ramp_frac_per_s for k, v in KINDS.items() if v.ramp_frac_per_s is not None})
    aggregate_ramp_kw_per_s: float | None = None  # |sum of P changes| per second, whole batch
    default_dt_s: float = 60.0  # time since the last command when a device has none yet
    refresh_dv_pu: float = 0.01  # recompute sensitivities when voltages moved this much
    max_confirm_iterations: int = 3
    value_tol: float = 1e-6


def _reason(kind: str, element: int) -> str:
    return f"{kind}:{ {'v_high': 'bus', 'v_low': 'bus', 'line_overload': 'line', 'trafo_overload': 'trafo'}[kind]}{element}"


class SafetyGate:
    """Validates command batches against device limits, ramps and the feeder (see module doc).

    `net` is the feeder model (copied; the gate keeps its own), `limits` has v_min_pu,
    v_max_pu, line_loading_max_pct, trafo_loading_max_pct (scenarios.model.Limits).
    """

    def __init__(self, net: pp.pandapowerNet, limits, config: SafetyConfig | None = None):
        self.limits = limits
        self.cfg = config or SafetyConfig()
        net = copy.deepcopy(net)
        for tab in ("load", "sgen", "storage"):
            if len(net[tab]):
                net[tab]["in_service"] = False
        self.net = net
        buses = net.bus.index[net.bus.in_service].to_numpy()
        # runpp only on rebuilds (its internal model feeds LeanFlow): no numba compile for those
        self.pf = PowerFlow(net, buses, use_numba=False, lean=False)
        self.n_slots = len(self.pf.der_buses)
        self._slot_of = {int(b): i for i, b in enumerate(self.pf.der_buses)}
        self._slot_lut = np.full(int(max(self._slot_of, default=-1)) + 1, -1, np.int64)  # bus -> slot
        self._slot_lut[list(self._slot_of)] = list(self._slot_of.values())
        self._bus_pos = {int(b): i for i, b in enumerate(self.pf.bus_index)}
        self.fast: LeanFlow | None = None
        self._sens = None
        self._rebuild(np.zeros(self.n_slots), np.zeros(self.n_slots))
        self._base_key = None
        self._base = None
        self._tap_version = 0
        self._last_sent_t: dict[str, float] = {}
        self.last_report: dict = {}
        self.checks = 0

    # --- public -----------------------------------------------------------------------------
    def check(self, commands: list[Command], state: GridSnapshot, now_s: float | None = None) -> GateResult:
        t0 = time.perf_counter()
        self.checks += 1
        now = state.now_s if now_s is None else float(now_s)
        report = {"n": len(commands), "power_flows": 0, "lp": False,
                  "basis": getattr(state, "basis", "allocation")}  # grid state: estimate | allocation
        self.last_report = report
        decisions: list[Decision | None] = [None] * len(commands)
        age = now - state.t_s
        if age > self.cfg.max_state_age_s:
            for i, c in enumerate(commands):
                decisions[i] = Decision(c, "rejected", None, ["stale_state"])
            report["stale_age_s"] = age
            return self._finish(decisions, report, t0)

        rows = self._validate(commands, state, decisions)
        self._apply_taps(state)
        base = self._base_state(state, report)
        if base is None:
            for i in rows["idx"]:
                decisions[i] = Decision(commands[i], "rejected", None, ["state_not_converged"])
            rows["idx"] = []
        steps = [i for i in rows["idx"] if commands[i].setpoint in STEPS]
        if steps:
            self._gate_steps(commands, steps, decisions, base, report)
            rows = {k: [v for i, v in zip(rows["idx"], rows[k]) if commands[i].setpoint not in STEPS]
                    for k in ("idx", "row", "target", "clipped")}
        if rows["idx"]:
            self._gate_grid(commands, state, rows, decisions, now, report)
        return self._finish(decisions, report, t0)

    def operating_point(self, state: GridSnapshot) -> dict | None:
        """The solved base state of a snapshot: {"p", "q" (per slot), "res" (FlowResult),
        "sens" (Sensitivities, columns = slots)}; None when it does not converge."""
        self._apply_taps(state)
        return self._base_state(state, {"power_flows": 0})

    def slot_of(self, bus) -> np.ndarray:
        """Injection slot (sensitivity column) of each pandapower bus (KeyError for a bus
        without one)."""
        b = np.asarray(np.atleast_1d(bus), np.int64)
        lut = self._slot_lut
        ok = (b >= 0) & (b < len(lut))
        s = np.where(ok, lut[np.where(ok, b, 0)], -1)
        if (s < 0).any():
            raise KeyError(int(b[np.flatnonzero(s < 0)[0]]))
        return s

    def solve(self, p_kw: np.ndarray, q_kvar: np.ndarray) -> FlowResult:
        """AC power flow with the given per-slot loads (what-if runs for volt/var)."""
        return self._run(p_kw, q_kvar, {"power_flows": 0})

    # --- validation, limits, ramps ------------------------------------------------------------------
    def _validate(self, commands, st: GridSnapshot, decisions) -> dict:
        """Fill decisions for invalid commands; return per-command arrays for the rest (device
        bounds from the device's kind, controller.kinds)."""
        keys = [(c.device_id, c.setpoint) for c in commands]
        last = dict(zip(keys, range(len(keys))))  # the last command per device and setpoint wins
        out = {"idx": [], "row": [], "target": [], "clipped": []}
        idx, row, target = out["idx"], out["row"], out["target"]
        rows_of, kinds = st.row_map(), st.kind_names()
        setpoints: dict[str, tuple] = {}  # per kind name, looked up once per batch
        available = st.available.tolist()
        for i, c in enumerate(commands):
            if last[keys[i]] != i:
                decisions[i] = Decision(c, "rejected", None, ["superseded"])
                continue
            sp = c.setpoint
            if sp in STEPS:
                r = self._step_validate(c)
                if r:
                    decisions[i] = Decision(c, "rejected", None, [r])
                    continue
                idx.append(i)
                row.append(-1)
                target.append(float(c.value))
                continue
            r = rows_of.get(c.device_id)
            if r is None:
                decisions[i] = Decision(c, "rejected", None, ["unknown_device"])
                continue
            k = kinds[r]
            sps = setpoints.get(k)
            if sps is None:
                sps = setpoints[k] = kind_of(k).setpoints
            if sp not in sps:
                decisions[i] = Decision(c, "rejected", None, ["unknown_setpoint"])
                continue
            try:
                v = float(c.value)
            except (TypeError, ValueError):
                v = math.nan
            if not math.isfinite(v):
                decisions[i] = Decision(c, "rejected", None, ["invalid_value"])
                continue
            if not available[r]:
                decisions[i] = Decision(c, "rejected", None, ["device_unavailable"])
                continue
            idx.append(i)
            row.append(r)
            target.append(v)
        v = np.asarray(out["target"], float)
        lo, hi = np.full(len(v), -np.inf), np.full(len(v), np.inf)
        for sel, k, sp, g in self._by_kind(st, out, commands):
            lo[sel], hi[sel] = k.bounds(g, sp)
        vc = np.minimum(np.maximum(v, lo), hi)
        out["target"] = vc.tolist()
        out["clipped"] = (vc != v).tolist()
        return out

    @staticmethod
    def _by_kind(st: GridSnapshot, rows: dict, commands) -> list:
        """(positions, kind, setpoint, SnapshotRows) per (kind, setpoint) among the device rows;
        made once per batch of rows (kept in rows["by_kind"], which a filtered copy drops)."""
        got = rows.get("by_kind")
        if got is not None:
            return got
        groups: dict[tuple[str, str], list[int]] = {}
        kinds = st.kind_names()
        for j, (i, r) in enumerate(zip(rows["idx"], rows["row"])):
            if r >= 0:
                key = (kinds[r], commands[i].setpoint)
                sel = groups.get(key)
                if sel is None:
                    groups[key] = [j]
                else:
                    sel.append(j)
        all_rows = np.asarray(rows["row"], np.int64)
        out = []
        for (k, sp), sel in groups.items():
            sel = np.asarray(sel, np.int64)
            out.append((sel, kind_of(k), sp, st.rows_of(all_rows[sel])))
        rows["by_kind"] = out
        return out

    def _effects(self, st: GridSnapshot, rows: dict, commands) -> tuple:
        """Per command: axis (0 P, 1 Q), current, requested and 'null' injection (kW/kvar, load
        convention) and the rating that sizes its ramp, all from the device's kind. The null
        injection is what the setpoint's neutral value gives: curtailing a command moves its
        injection from the requested value toward it."""
        n = len(rows["idx"])
        axis = np.zeros(n, np.int8)
        cur, req, null = np.zeros(n), np.zeros(n), np.zeros(n)
        size = np.full(n, np.inf)
        target = np.asarray(rows["target"], float)
        for sel, k, sp, g in self._by_kind(st, rows, commands):
            q = sp == k.q_setpoint
            axis[sel] = int(q)
            cur[sel] = (st.q_kvar if q else st.p_kw)[g.rows]
            req[sel], null[sel] = k.injection(g, sp, target[sel], cur[sel])
            size[sel] = k.size_kw(g)
        return axis, cur, req, null, size

    @staticmethod
    def _setpoint_for(st: GridSnapshot, r: int, sp: str, inj: float, cur: float) -> float:
        """Inverse of `_effects`: the setpoint value that yields injection `inj` at the device."""
        k = kind_of(str(st.kind[r]))
        return float(k.setpoint_for(st.rows_of([r]), sp, np.array([inj]), np.array([cur]))[0])

    # --- grid --------------------------------------------------------------------------------------
    def _base_injections(self, st: GridSnapshot) -> tuple[np.ndarray, np.ndarray]:
        p = np.zeros(self.n_slots)
        q = np.zeros(self.n_slots)
        bs = np.searchsorted(self.pf.der_buses, st.base_bus)
        np.add.at(p, bs, st.base_p_kw)
        np.add.at(q, bs, st.base_q_kvar)
        if st.n:
            ds = np.searchsorted(self.pf.der_buses, st.bus)
            np.add.at(p, ds, st.p_kw)
            np.add.at(q, ds, st.q_kvar)
        return p, q

    def _base_state(self, st: GridSnapshot, report):
        p, q = self._base_injections(st)
        key = (p.tobytes(), q.tobytes(), self._tap_key())
        if key == self._base_key and self._base is not None:
            return self._base
        res = self._run(p, q, report)
        if not res.converged:
            self._base_key, self._base = None, None
            return None
        sens = self._sens
        if sens is None or np.max(np.abs(sens.v_pu - res.v_pu)) > self.cfg.refresh_dv_pu:
            sens = self._sens = linearize(self.model, res.v, self.slot_pos, self.pf.der_buses)
            self.fast.refactor(res.v)
            report["sensitivity_refresh"] = True
        self._base = {"p": p, "q": q, "res": res, "sens": sens}
        self._base_key = key
        return self._base

    def _rebuild(self, p, q) -> FlowResult:
        """Full pandapower power flow; its internal model becomes the fast solver's."""
        res = self.pf.run(p, q, load_scale=0.0, pv_scale=0.0, other_sgen_scale=0.0)
        if not res.converged:
            self.fast = None
            return FlowResult(False, res.v_pu, res.line_loading_pct, res.trafo_loading_pct)
        self.model = NetModel.from_net(self.net)
        self.slot_pos = np.asarray(self.net._pd2ppc_lookups["bus"][self.pf.der_buses], np.int64)
        self.fast = LeanFlow(self.model, self.slot_pos, p, q)
        self._sens = None
        v = self.model.v
        ll, tl = self.model.loadings(v)
        return FlowResult(True, np.abs(v)[self.model.bus_pos], ll, tl, v)

    def _run(self, p, q, report) -> FlowResult:
        report["power_flows"] += 1
        if self.fast is None:
            return self._rebuild(p, q)
        res = self.fast.solve(p, q)
        if not res.converged:
            res = self._rebuild(p, q)
        return res

    def _bounds(self, res, margin_v, margin_l):
        """Upper/lower bounds per element: the band (minus margin), but never below where the
        base state already is (a command batch must not be blamed for an existing violation)."""
        lim = self.limits
        v = res.v_pu
        v_hi = np.maximum(lim.v_max_pu - margin_v, v)
        v_lo = np.minimum(lim.v_min_pu + margin_v, v)
        l_hi = np.maximum(lim.line_loading_max_pct - margin_l, res.line_loading_pct)
        t_hi = np.maximum(lim.trafo_loading_max_pct - margin_l, res.trafo_loading_pct)
        return v_hi, v_lo, l_hi, t_hi

    def _targets(self, res):
        """Where the LP aims (soft): inside the band by the margin, for every element."""
        lim, cfg = self.limits, self.cfg
        n_l, n_t = len(res.line_loading_pct), len(res.trafo_loading_pct)
        return [np.full(len(res.v_pu), lim.v_max_pu - cfg.v_margin_pu),
                np.full(len(res.v_pu), -(lim.v_min_pu + cfg.v_margin_pu)),
                np.full(n_l, lim.line_loading_max_pct - cfg.loading_margin_pct),
                np.full(n_t, lim.trafo_loading_max_pct - cfg.loading_margin_pct)]

    def _gate_grid(self, commands, st: GridSnapshot, rows, decisions, now, report):
        cfg = self.cfg
        base = self._base
        axis, cur, req, null, size = self._effects(st, rows, commands)
        reasons = [["device_limit"] if clipped else [] for clipped in rows["clipped"]]
        # feasible range of each command's injection change: between request and null, within ramp
        lo = np.minimum(req, null) - cur
        hi = np.maximum(req, null) - cur
        d_req = req - cur
        kinds = st.kind_names()
        ramp = self._ramp_limits(commands, rows, kinds, size, lo, hi, d_req, now)
        for j in np.flatnonzero(ramp):
            reasons[j].append("ramp_limit")
        # linear screen
        res0 = base["res"]
        sens = base["sens"]
        slots = self.slot_of(st.bus[np.asarray(rows["row"], np.int64)])
        g_v = np.where(axis == 0, sens.dv_dp[:, slots], sens.dv_dq[:, slots])
        g_l = np.where(axis == 0, sens.dline_dp[:, slots], sens.dline_dq[:, slots])
        g_t = np.where(axis == 0, sens.dtrafo_dp[:, slots], sens.dtrafo_dq[:, slots])
        elems = [("v_high", self.pf.bus_index, res0.v_pu, 1.0, g_v),
                 ("v_low", self.pf.bus_index, res0.v_pu, -1.0, g_v),
                 ("line_overload", self.pf.line_index, res0.line_loading_pct, 1.0, g_l),
                 ("trafo_overload", self.pf.trafo_index, res0.trafo_loading_pct, 1.0, g_t)]
        targets = self._targets(res0)
        extra = [np.zeros_like(b) for b in targets]  # tightening after failed confirmations
        agg = None
        if cfg.aggregate_ramp_kw_per_s is not None:
            agg = (axis == 0, cfg.aggregate_ramp_kw_per_s * cfg.default_dt_s)
        bad = []
        for it in range(cfg.max_confirm_iterations + 1):
            d, binding = self._solve(elems, targets, extra, lo, hi, d_req, agg, report)
            res = self._apply(base, slots, axis, d, report)
            bad = self._confirm_violations(res, res0)
            if not bad:
                break
            for (e, k, over) in bad:
                extra[e][k] += over * 1.5 + (0.002 if e < 2 else 0.5)
        else:
            # last resort: no change for every command that worsens a violated element
            d = self._drop_worsening(d, elems, bad, binding)
            res = self._reconfirm(base, slots, axis, d, binding, res0, report)
        # on/off commands the LP could only keep in part are dropped whole; re-confirm without them
        whole_sp = {k: kind_of(k).all_or_nothing for k in {kinds[r] for r in rows["row"]}}
        whole = [commands[i].setpoint in whole_sp[kinds[r]] for i, r in zip(rows["idx"], rows["row"])]
        cut = [j for j in range(len(whole)) if whole[j]
               and abs(d[j] - d_req[j]) > 1e-6 * (1 + abs(d_req[j])) and d[j] != 0.0]
        if cut:
            d[cut] = 0.0
            res = self._reconfirm(base, slots, axis, d, binding, res0, report)
        report["v_max_pu"] = float(np.nanmax(res.v_pu)) if res.converged else float("nan")
        report["v_min_pu"] = float(np.nanmin(res.v_pu)) if res.converged else float("nan")
        tol = 1e-6
        # the per-command tests below, for all commands at once (same float arithmetic)
        cut_back = (np.abs(d - d_req) > tol * (1 + np.abs(d_req))).tolist()
        nothing_left = ((np.abs(d) <= tol) & (np.abs(req - cur) > tol)).tolist()
        exact = (np.abs(d - (req - cur)) <= tol * (1 + np.abs(req))).tolist()
        sent_t = self._last_sent_t
        for j, (i, r) in enumerate(zip(rows["idx"], rows["row"])):
            c = commands[i]
            why = reasons[j]
            if cut_back[j]:
                kind, el, _ = binding.get(j, ("unconfirmed", -1, 0.0))
                why.append(kind if kind == "aggregate_ramp" else
                           _reason(kind, el) if el >= 0 else "grid_unconfirmed")
            if not why:
                decisions[i] = Decision(c, "accepted", float(c.value), [])
            elif (nothing_left[j] and why != ["device_limit"]) or whole[j]:
                decisions[i] = Decision(c, "rejected", None, why)
                continue
            else:
                value = rows["target"][j] if exact[j] else self._setpoint_for(st, r, c.setpoint, cur[j] + d[j], cur[j])
                decisions[i] = Decision(c, "curtailed", value, why)
            sent_t[c.device_id] = now

    def _ramp_limits(self, commands, rows, kinds, size, lo, hi, d_req, now) -> np.ndarray:
        """Narrow each command's feasible change [lo, hi] (in place) to what its ramp allows
        since its last sent command (`ramp_frac_per_s` of its size per s; a range out of reach
        this cycle: as far toward it as the ramp allows) and pull d_req into it; returns the
        commands whose request the ramp cut. Python's max/min and comparison semantics, per
        element (a NaN step leaves the range as it was)."""
        cfg = self.cfg
        frac_of = {k: cfg.ramp_frac_per_s.get(k) for k in set(kinds[r] for r in rows["row"])}
        frac = [frac_of[kinds[r]] for r in rows["row"]]
        has = np.array([f is not None for f in frac], bool)
        if not has.any():
            return has
        default_t = now - cfg.default_dt_s
        last_t = np.array([self._last_sent_t.get(commands[i].device_id, default_t) for i in rows["idx"]], float)
        dt = now - last_t
        with np.errstate(invalid="ignore"):  # unknown size (inf) x dt 0: NaN, the range stays as it is
            step = np.array([0.0 if f is None else f for f in frac], float) * size * np.where(0.0 > dt, 0.0, dt)
        lo_r = np.where(-step > lo, -step, lo)  # max(lo, -step)
        hi_r = np.where(step < hi, step, hi)  # min(hi, step)
        far = lo_r > hi_r
        to = np.where(hi < -step, -step, step)
        lo_r = np.where(far, to, lo_r)
        hi_r = np.where(far, to, hi_r)
        ramp = has & ~((lo_r - 1e-9 <= d_req) & (d_req <= hi_r + 1e-9))
        up = np.where(lo_r > d_req, lo_r, d_req)  # min(max(d_req, lo_r), hi_r)
        d_req[ramp] = np.where(hi_r < up, hi_r, up)[ramp]
        lo[has], hi[has] = lo_r[has], hi_r[has]
        return ramp

    def _reconfirm(self, base, slots, axis, d, binding, res0, report):
        """Power flow of the changed batch `d`; if it still violates, nothing is sent (d := 0,
        in place) and every command not already explained is marked unconfirmed."""
        res = self._apply(base, slots, axis, d, report)
        if self._confirm_violations(res, res0):
            d[:] = 0.0
            for j in range(len(d)):
                binding.setdefault(j, ("unconfirmed", -1, 0.0))
        return res

    def _apply(self, base, slots, axis, d, report):
        p, q = base["p"].copy(), base["q"].copy()
        np.add.at(p, slots[axis == 0], d[axis == 0])
        np.add.at(q, slots[axis == 1], d[axis == 1])
        return self._run(p, q, report)

    def _solve(self, elems, targets, extra, lo, hi, d_req, agg, report):
        """Injection changes d in [lo, hi] closest (L1, kW/kvar) to d_req whose linear
        prediction stays in the band; band rows are soft (large penalty) so the LP always
        answers, and gets as close to the band as the commanded devices can."""
        n = len(d_req)
        rows_a, rows_b, meta = [], [], []
        for e, (kind, idx, val, sign, g) in enumerate(elems):
            if g.shape[0] == 0:
                continue
            gs = sign * g
            worst = sign * val + np.maximum(gs * lo, gs * hi).sum(axis=1)
            lim = targets[e] - extra[e]
            scale = 100.0 if e < 2 else 1.0  # voltage rows in % of nominal, like loading rows
            for k in np.flatnonzero(worst > lim + 1e-12):
                rows_a.append(scale * gs[k])
                rows_b.append(scale * (lim[k] - sign * val[k]))
                meta.append((kind, int(idx[k])))
        if agg is not None:
            mask, cap = agg
            rows_a += [mask.astype(float), -mask.astype(float)]
            rows_b += [cap, cap]
            meta += [("aggregate_ramp", -1), ("aggregate_ramp", -1)]
        if not rows_a:
            return d_req.copy(), {}
        report["lp"] = True
        m = len(rows_a)
        a = np.hstack([np.array(rows_a), -np.eye(m)])  # slack per row
        b = np.array(rows_b)
        # distance from the request: d_req sits at one end of [lo, hi]
        direction = np.where(d_req >= hi - 1e-12, 1.0, -1.0)
        c = np.r_[-direction, np.full(m, 1e5)]
        sol = solve_lp(c, a, b, np.r_[lo, np.zeros(m)], np.r_[hi, np.full(m, np.inf)])
        if sol is None:
            return np.zeros(n), {j: ("unconfirmed", -1, 0.0) for j in range(n)}
        d = np.clip(sol[:n], lo, hi)
        slack_rows = b - a[:, :n] @ d
        binding = {}
        ga = a[:, :n]
        for j in range(n):
            if abs(d[j] - d_req[j]) <= 1e-9 * (1 + abs(d_req[j])):
                continue
            # rows that stop this command from going further toward its request
            push = ga[:, j] * direction[j]
            tight = slack_rows < 1e-6 * (1 + np.abs(b))
            score = np.where(tight, push, -np.inf)
            k = int(np.argmax(score)) if np.isfinite(score).any() else int(np.argmax(push))
            kind, el = meta[k]
            binding[j] = (kind, el, float(ga[k, j]))
        return d, binding

    def _confirm_violations(self, res, res0):
        """Elements outside the band after the batch (and worse than in the base state)."""
        if not res.converged:
            return [(0, int(np.argmax(res0.v_pu)), 0.01)]
        v_hi, v_lo, l_hi, t_hi = self._bounds(res0, 0.0, 0.0)
        out = []
        tol = 1e-6
        for e, (val, lim) in enumerate(((res.v_pu, v_hi), (-res.v_pu, -v_lo),
                                        (res.line_loading_pct, l_hi), (res.trafo_loading_pct, t_hi))):
            over = val - lim
            for k in np.flatnonzero(over > tol):
                out.append((e, int(k), float(over[k])))
        return out

    def _drop_worsening(self, d, elems, bad, binding):
        d = d.copy()
        for (e, k, _) in bad:
            kind, idx, _, sign, g = elems[e]
            for j in np.flatnonzero(sign * g[k] * d > 0):
                d[j] = 0.0
                binding[j] = (kind, int(idx[k]), 0.0)
        return d

    # --- transformer taps and capacitor steps (via the RTU) ------------------------------------
    def _step_validate(self, c: Command) -> str:
        el = step_element(self.net, c.device_id, c.setpoint)
        if el is None:
            return "unknown_device"
        table, idx, column = el
        rng = step_range(self.net, table, idx)
        if rng is None:
            return "unknown_setpoint"
        try:
            v = float(c.value)
        except (TypeError, ValueError):
            return "invalid_value"
        if not np.isfinite(v) or v != round(v) or not (rng[0] <= v <= rng[1]):
            return "device_limit"
        if abs(v - self.net[table].at[idx, column]) > 1:
            return "ramp_limit"  # one step at a time
        return ""

    def _tap_key(self):
        return self._tap_version

    def _apply_taps(self, st: GridSnapshot):
        """Tap positions and capacitor steps as the RTU reports them into the gate's model."""
        changed = False
        for table, column, reported in (("trafo", "tap_pos", st.trafo_tap_pos), ("shunt", "step", st.shunt_step)):
            tab = self.net[table]
            for t, pos in reported.items():
                if t in tab.index and np.isfinite(pos) and tab.at[t, column] != pos:
                    tab.at[t, column] = pos
                    changed = True
        if changed:
            self.pf.invalidate()
            self.fast = None
            self._sens = None
            self._tap_version += 1

    def what_if_step(self, device_id: str, setpoint: str, value: float, p, q) -> FlowResult:
        """AC power flow with one tap/capacitor step applied to per-slot loads p, q; the model
        is restored (and rebuilt) afterwards."""
        table, idx, column = step_element(self.net, device_id, setpoint)
        tab = self.net[table]
        old = tab.at[idx, column]
        tab.at[idx, column] = value
        self.pf.invalidate()
        try:
            res = self._rebuild(p, q)
        finally:
            tab.at[idx, column] = old
            self.pf.invalidate()
            self._rebuild(p, q)
        return res

    def _gate_steps(self, commands, steps, decisions, base, report):
        """Try each tap/capacitor step alone on the base state; keep it when it worsens nothing.
        The other commands are checked on the reported positions: a step acts in a later cycle,
        once the RTU reports it."""
        res0 = base["res"]
        for i in steps:
            c = commands[i]
            report["power_flows"] += 2
            res = self.what_if_step(c.device_id, c.setpoint, float(c.value), base["p"], base["q"])
            bad = self._confirm_violations(res, res0)
            if bad:
                e, k, _ = bad[0]
                kind = ("v_high", "v_low", "line_overload", "trafo_overload")[e]
                idx = (self.pf.bus_index, self.pf.bus_index, self.pf.line_index, self.pf.trafo_index)[e][k]
                decisions[i] = Decision(c, "rejected", None, [_reason(kind, int(idx))])
            else:
                decisions[i] = Decision(c, "accepted", float(c.value), [])

    def _finish(self, decisions, report, t0) -> GateResult:
        result = GateResult([d for d in decisions if d is not None])
        report["accepted"] = len(result.accepted)
        report["curtailed"] = len(result.curtailed)
        report["rejected"] = len(result.rejected)
        report["latency_ms"] = (time.perf_counter() - t0) * 1000.0
        return result


def alarms(result: GateResult) -> list[dict]:
    """One alarm record per rejected command (the runtime logs them to events and the API)."""
    return [{"kind": "gate_rejected", "device_id": d.command.device_id, "setpoint": d.command.setpoint,
             "value": d.command.value, "source": d.command.source, "reasons": d.reasons}
            for d in result.rejected]

