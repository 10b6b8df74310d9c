"""Volt/VAR: keep feeder voltages in band with inverter reactive power and transformer taps.

Two layers, as in practice:
- local IEEE 1547-2018 volt-var curves (`VoltVarCurve`, Category B defaults): each PV inverter
  or battery sets Q from its own terminal voltage, no communication needed;
- a coordinated optimal reactive dispatch (`optimal_reactive_dispatch`): an LP (HiGHS) on the
  Jacobian sensitivities that finds the least total |Q| putting every bus in band, confirmed
  by an AC power flow;
- when Q cannot do it, one step of a capacitor bank or a feeder-head OLTC (`step_command`), sent through
  the feeder RTU as Command("<rtu>/cap<k>", "step", n) or Command("<rtu>/trafo<k>", "tap_pos", n):
  the step that leaves the least band violation in an AC power flow, never one that pushes the
  other side of the band out (no hunting), capacitors before taps on a tie.
All commands still go through the SafetyGate. Load sign convention: +q_kvar absorbs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from controller.commands import Command
from controller.kinds import KINDS
from controller.safety.gate import step_range
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
    notes: list[str] = field(default_factory=list)
    p_kw: np.ndarray | None = None  # per-slot loads of the operating point (what-if runs)
    q_kvar: np.ndarray | None = None


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
    return VarDispatch(cmds, res0.v_pu, res.v_pu, in_band, float(np.abs(q_new[rows]).sum()), notes, p, q)


def step_candidates(net, rtu: str = "rtu") -> list[tuple[str, str, float, bool]]:
    """(device_id, setpoint, value, is_capacitor) for one step either way of every capacitor
    bank and of the on-load tap changers at the feeder head (taps of transformers inside the
    feeder are off-load in practice), within its range (positions as the model holds them:
    the gate keeps them at what the RTU reports)."""
    out = []
    heads = set(head_trafos(net))
    for table, setpoint, prefix, column in (("shunt", "step", "cap", "step"), ("trafo", "tap_pos", "trafo", "tap_pos")):
        tab = net[table]
        for k, idx in enumerate(tab.index):
            if table == "trafo" and int(idx) not in heads:
                continue
            rng = step_range(net, table, idx)
            if rng is None or not bool(tab.at[idx, "in_service"]):
                continue
            now = float(tab.at[idx, column])
            if not np.isfinite(now):
                continue
            for new in (now - 1, now + 1):
                if rng[0] <= new <= rng[1]:
                    out.append((f"{rtu}/{prefix}{k}", setpoint, new, table == "shunt"))
    return out


def band_excess_pu(v_pu: np.ndarray, limits, margin_pu: float = 0.0) -> tuple[float, float]:
    """(worst pu above v_max - margin, worst pu below v_min + margin) over the buses; 0: none."""
    v = np.asarray(v_pu, float)
    return (max(float(np.nanmax(v)) - (limits.v_max_pu - margin_pu), 0.0),
            max((limits.v_min_pu + margin_pu) - float(np.nanmin(v)), 0.0))


def step_command(gate, p_kw, q_kvar, v_pu: np.ndarray, limits, rtu: str = "rtu",
                 margin_pu: float = 0.003, exclude=()) -> tuple[Command | None, dict]:
    """One capacitor or tap step toward the band (`margin_pu` inside it), each candidate tried
    in an AC power flow on the per-slot loads p_kw, q_kvar: a step that puts every bus back is
    preferred (a capacitor before a tap), else the one leaving the worst bus closest to the band. A step that
    would bring the other side of the band within `margin_pu` is never taken (it would be
    stepped back: hunting). (None, {}) when the band holds, nothing helps or the feeder has
    neither; the dict gives the voltages the step should leave. Elements named in `exclude`
    (device ids: stepped too recently) are not tried."""
    hi0, lo0 = band_excess_pu(v_pu, limits, margin_pu)
    if hi0 + lo0 <= 0.0 or (hi0 > 0 and lo0 > 0):  # in band, or out on both sides: no step helps
        return None, {}
    best = None
    for dev, sp, value, cap in step_candidates(gate.net, rtu):
        if dev in exclude:
            continue
        res = gate.what_if_step(dev, sp, value, p_kw, q_kvar)
        if not res.converged:
            continue
        hi, lo = band_excess_pu(res.v_pu, limits, margin_pu)
        if (hi0 > 0 and lo > 0) or (lo0 > 0 and hi > 0) or hi + lo >= hi0 + lo0 - 1e-6:
            continue
        key = (hi + lo > 1e-9, round(hi + lo, 6), not cap)
        if best is None or key < best[0]:
            best = (key, Command(dev, sp, float(value), "volt_var", "over-voltage" if hi0 > 0 else "under-voltage"),
                    {"v_min_pu": round(float(np.nanmin(res.v_pu)), 4), "v_max_pu": round(float(np.nanmax(res.v_pu)), 4),
                     "excess_pu": round(hi + lo, 5)})
    return (None, {}) if best is None else (best[1], best[2])


def _ok(res, limits) -> bool:
    return bool(np.all(res.v_pu <= limits.v_max_pu + 1e-9) and np.all(res.v_pu >= limits.v_min_pu - 1e-9)
                and np.all(res.line_loading_pct <= limits.line_loading_max_pct + 1e-6)
                and np.all(res.trafo_loading_pct <= limits.trafo_loading_max_pct + 1e-6))
