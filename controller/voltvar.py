"""Volt/VAR: keep feeder voltages in band with inverter reactive power and transformer taps.

Two layers, as in practice:
- local IEEE 1547-2018 volt-var curves (`VoltVarCurve`, Category B defaults): each PV inverter
  or battery sets Q from its own terminal voltage, no communication needed;
- a coordinated optimal reactive dispatch (`optimal_reactive_dispatch`): an LP (HiGHS) on the
  Jacobian sensitivities that finds the least total |Q| putting every bus in band, confirmed
  by an AC power flow; if Q cannot do it, one OLTC step on a feeder-head transformer with a
  tap changer is proposed as a Command("rtu/trafo<idx>", "tap_pos", ...) for the IEC 104 RTU.
All commands still go through the SafetyGate. Load sign convention: +q_kvar absorbs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.commands import Command
from controller.kinds import KINDS
from controller.safety.lp import solve_lp
from controller.safety.state import GridSnapshot
from grid_models.contingency import head_trafos
from grid_models.sensitivity import linearize

Q_KINDS = tuple(k for k, v in KINDS.items() if v.q_setpoint in v.setpoints)  # reactive-capable


@dataclass(frozen=True)
class VoltVarCurve:
    """Piecewise-linear Q(V); q as a fraction of rated apparent power, generator convention
    (+ injects vars, raising voltage). Defaults: IEEE 1547-2018 Category B."""

    v_pu: tuple = (0.92, 0.98, 1.02, 1.08)
    q_frac: tuple = (0.44, 0.0, 0.0, -0.44)

    def q_kvar(self, v_pu, s_rated_kva) -> np.ndarray:
        """Reactive setpoint in the load convention (+ absorbs) for terminal voltages v_pu."""
        gen = np.interp(np.asarray(v_pu, float), self.v_pu, self.q_frac) * np.asarray(s_rated_kva, float)
        return -gen


def q_capability(st: GridSnapshot) -> tuple[np.ndarray, np.ndarray]:
    """Reactive limits (kvar) per device row: PV 0.44 x S (and what S leaves beside P),
    batteries their p_max_kw rating; zero for devices that cannot make vars."""
    q_max = st.rating("q_max_kvar").copy()
    pv = st.kind == "pv"
    s = st.rating("s_rated_kva")
    q_max = np.where(np.isfinite(q_max), q_max, np.where(pv, 0.44 * s, st.rating("p_max_kw")))
    room = np.where(pv, np.sqrt(np.maximum(np.nan_to_num(s) ** 2 - st.p_kw ** 2, 0.0)), np.inf)
    q_max = np.minimum(np.nan_to_num(q_max), room)
    ok = np.isin(st.kind, Q_KINDS) & st.available
    q_max = np.where(ok, q_max, 0.0)
    return -q_max, q_max


def volt_var_commands(st: GridSnapshot, v_device_pu: np.ndarray, curve: VoltVarCurve = VoltVarCurve()) -> list[Command]:
    """Local curves: q_set_kvar per PV/battery from the voltage at its bus."""
    lo, hi = q_capability(st)
    s = np.where(st.kind == "pv", st.rating("s_rated_kva"), st.rating("p_max_kw"))
    q = np.clip(curve.q_kvar(v_device_pu, np.nan_to_num(s)), lo, hi)
    return [Command(st.device_ids[r], "q_set_kvar", float(q[r]), "volt_var", "volt-var curve")
            for r in np.flatnonzero(np.isin(st.kind, Q_KINDS) & st.available)]


@dataclass
class VarDispatch:
    commands: list[Command]
    v_before_pu: np.ndarray
    v_after_pu: np.ndarray  # AC power flow with the reactive commands (and no tap change)
    in_band: bool
    q_total_kvar: float
    tap_command: Command | None = None
    notes: list[str] = field(default_factory=list)


def optimal_reactive_dispatch(gate, st: GridSnapshot, limits, margin_pu: float = 0.003,
                              loading_margin_pct: float = 2.0,
                              max_rounds: int = 6) -> VarDispatch:
    """Least total |Q| from PV/batteries that puts every bus voltage in band without
    overloading a branch (LP on the gate's sensitivities, re-linearised and confirmed by AC
    power flow each round: |I| is far from linear in Q when P dominates); a tap step when Q
    runs out. `in_band` means voltages and loadings within limits.

    `gate` is the SafetyGate (its operating point, sensitivities and fast power flow are reused).
    """
    op = gate.operating_point(st)
    if op is None:
        raise RuntimeError("volt/var: the snapshot's power flow does not converge")
    res0 = op["res"]
    rows = np.flatnonzero(np.isin(st.kind, Q_KINDS) & st.available)
    lo, hi = q_capability(st)
    q_cur = st.q_kvar.copy()
    q_new = q_cur.copy()
    slots = gate.slot_of(st.bus[rows]) if len(rows) else np.zeros(0, np.int64)
    p, q = op["p"], op["q"]
    sens = op["sens"]
    v_now = res0.v_pu
    notes = []
    res = res0
    for rnd in range(max_rounds):
        n = len(rows)
        if n == 0:
            break
        g = sens.dv_dq[:, slots]  # pu per kvar, load convention
        dq_lo = lo[rows] - q_new[rows]
        dq_hi = hi[rows] - q_new[rows]
        nb = g.shape[0]
        v_hi = limits.v_max_pu - margin_pu
        v_lo = limits.v_min_pu + margin_pu
        # variables: qp, qn >= 0 (q_final = q_now + qp - qn, within capability), slack_hi, slack_lo
        # cost: |q_final| approximated by |qp - qn| around the current q (cheap and convex) + slack
        a_hi = np.hstack([g, -g, -np.eye(nb), np.zeros((nb, nb))])
        a_lo = np.hstack([-g, g, np.zeros((nb, nb)), -np.eye(nb)])
        a_cap_hi = np.hstack([np.eye(n), -np.eye(n), np.zeros((n, 2 * nb))])
        # branch loading must stay under its limit (absorbing vars adds current); hard rows,
        # only for branches the vars could push over
        gl = np.vstack([sens.dline_dq[:, slots], sens.dtrafo_dq[:, slots]])
        load_now = np.r_[res.line_loading_pct, res.trafo_loading_pct]
        load_max = np.r_[np.full(len(res.line_loading_pct), limits.line_loading_max_pct),
                         np.full(len(res.trafo_loading_pct), limits.trafo_loading_max_pct)] - loading_margin_pct
        load_max = np.maximum(load_max, np.r_[res0.line_loading_pct, res0.trafo_loading_pct])
        reach = load_now + np.maximum(gl * dq_lo, gl * dq_hi).sum(axis=1)
        risky = np.flatnonzero(reach > load_max)
        a_ld = np.hstack([gl[risky], -gl[risky], np.zeros((len(risky), 2 * nb))])
        a = np.vstack([a_hi, a_lo, a_cap_hi, -a_cap_hi, a_ld])
        b = np.r_[100 * (v_hi - v_now), 100 * (v_now - v_lo), dq_hi, -dq_lo, load_max[risky] - load_now[risky]]
        a[:nb, : 2 * n] *= 100.0  # voltage rows in % of nominal, slack in %
        a[nb:2 * nb, : 2 * n] *= 100.0
        cost = np.r_[np.ones(2 * n) * 1e-3, np.full(2 * nb, 1e3)]
        ub = np.r_[np.full(2 * n, np.inf), np.full(2 * nb, np.inf)]
        sol = solve_lp(cost, a, b, np.zeros(2 * n + 2 * nb), ub)
        if sol is None:
            notes.append("lp_failed")
            break
        dq = sol[:n] - sol[n:2 * n]
        q_new[rows] = np.clip(q_new[rows] + dq, lo[rows], hi[rows])
        q_slot = q.copy()
        np.add.at(q_slot, slots, q_new[rows] - q_cur[rows])
        res = gate.solve(p, q_slot)
        if not res.converged:
            notes.append("not_converged")
            break
        v_now = res.v_pu
        if _ok(res, limits):
            break
        sens = linearize(gate.model, res.v, gate.slot_pos, gate.pf.der_buses)
    in_band = bool(res.converged and _ok(res, limits))
    cmds = [Command(st.device_ids[r], "q_set_kvar", float(q_new[r]), "volt_var", "optimal reactive dispatch")
            for r in rows if abs(q_new[r] - q_cur[r]) > 1e-6]
    tap = None if in_band else tap_step_command(gate.net, res.v_pu, limits)
    return VarDispatch(cmds, res0.v_pu, res.v_pu, in_band, float(np.abs(q_new[rows]).sum()), tap, notes)


def tap_step_command(net, v_pu: np.ndarray, limits) -> Command | None:
    """One OLTC step on a feeder-head transformer toward the band, or None (no tap changer,
    at the end of its range, or the band violated on both sides)."""
    high = np.nanmax(v_pu) > limits.v_max_pu
    low = np.nanmin(v_pu) < limits.v_min_pu
    if high == low:
        return None
    for t in head_trafos(net):
        tr = net.trafo.loc[t]
        if not _has_tap_changer(tr):
            continue
        # a higher tap position on the HV winding lowers the LV voltage (and the reverse on LV)
        lower_v = 1 if str(tr.get("tap_side", "hv")) == "hv" else -1
        step = lower_v if high else -lower_v
        new = int(tr.tap_pos) + step
        if tr.tap_min <= new <= tr.tap_max:
            return Command(f"rtu/trafo{t}", "tap_pos", float(new), "volt_var",
                           "over-voltage" if high else "under-voltage")
    return None


def _has_tap_changer(tr) -> bool:
    """pandapower 3.x ignores tap_pos unless tap_changer_type is set (SimBench leaves it None)."""
    kind = tr.get("tap_changer_type", None)
    return (isinstance(kind, str) and bool(kind)
            and np.isfinite(tr.get("tap_step_percent", np.nan)) and np.isfinite(tr.get("tap_pos", np.nan)))


def _ok(res, limits) -> bool:
    return bool(np.all(res.v_pu <= limits.v_max_pu + 1e-9) and np.all(res.v_pu >= limits.v_min_pu - 1e-9)
                and np.all(res.line_loading_pct <= limits.line_loading_max_pct + 1e-6)
                and np.all(res.trafo_loading_pct <= limits.trafo_loading_max_pct + 1e-6))
