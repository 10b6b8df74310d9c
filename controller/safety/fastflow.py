"""A lean AC power flow for the gate's repeated what-if runs on one operating point.

pandapower's `runpp` spends most of its ~15-70 ms here in pandas bookkeeping, not in the
Newton solve. The gate re-solves the same network with different bus injections many times,
so it takes pandapower's internal model once (`NetModel`) and iterates Newton-Raphson itself:
chord iterations with an LU-factored Jacobian kept from the last refresh (cheap, converges in
a few steps near the operating point), falling back to full Newton steps when they stall.
Same equations and tolerances as pandapower; tests compare the two.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pandapower.pypower.dSbus_dV import dSbus_dV
from scipy.linalg import lu_factor, lu_solve

from grid_models.sensitivity import NetModel


@dataclass
class FlowResult:
    converged: bool
    v_pu: np.ndarray  # pandapower bus order
    line_loading_pct: np.ndarray
    trafo_loading_pct: np.ndarray
    v: np.ndarray | None = None  # internal complex voltages
    iterations: int = 0


def jacobian(m: NetModel, v: np.ndarray) -> np.ndarray:
    pvpq = np.r_[m.pv, m.pq]
    ds_dvm, ds_dva = dSbus_dV(m.ybus, v)
    j11 = ds_dva[np.ix_(pvpq, pvpq)].real
    j12 = ds_dvm[np.ix_(pvpq, m.pq)].real
    j21 = ds_dva[np.ix_(m.pq, pvpq)].imag
    j22 = ds_dvm[np.ix_(m.pq, m.pq)].imag
    return np.block([[j11.toarray(), j12.toarray()], [j21.toarray(), j22.toarray()]])


class FastFlow:
    """Newton-Raphson on `model` with load changes (kW/kvar, load convention) per slot bus.

    `slot_pos`: internal bus position of each slot; `p0_kw`/`q0_kvar`: the slot loads the
    model's converged solution was computed with.
    """

    def __init__(self, model: NetModel, slot_pos: np.ndarray, p0_kw: np.ndarray, q0_kvar: np.ndarray,
                 tol_pu: float = 1e-8, max_iter: int = 30):
        self.m = model
        self.slot_pos = np.asarray(slot_pos, np.int64)
        self.tol = tol_pu
        self.max_iter = max_iter
        self.s_fixed = model.sbus.copy()
        np.add.at(self.s_fixed, self.slot_pos, (np.asarray(p0_kw) + 1j * np.asarray(q0_kvar)) / 1000.0 / model.base_mva)
        self.pvpq = np.r_[model.pv, model.pq]
        self.refactor(model.v)
        self.solves = 0
        self.refactors = 0

    def refactor(self, v: np.ndarray) -> None:
        self._lu = lu_factor(jacobian(self.m, v))
        self.v_j = v.copy()

    def sbus(self, p_kw, q_kvar) -> np.ndarray:
        s = self.s_fixed.copy()
        np.add.at(s, self.slot_pos, -(np.asarray(p_kw) + 1j * np.asarray(q_kvar)) / 1000.0 / self.m.base_mva)
        return s

    def solve(self, p_kw, q_kvar, v0: np.ndarray | None = None) -> FlowResult:
        self.solves += 1
        m = self.m
        s = self.sbus(p_kw, q_kvar)
        v = (self.v_j if v0 is None else v0).copy()
        va, vm = np.angle(v), np.abs(v)
        npvpq = len(self.pvpq)
        it = 0
        converged = False
        full = False
        while it < self.max_iter:
            mis = v * np.conj(m.ybus @ v) - s
            f = np.r_[mis[self.pvpq].real, mis[m.pq].imag]
            if not np.all(np.isfinite(f)):
                break
            if np.max(np.abs(f)) < self.tol:
                converged = True
                break
            if it == 8 and not full:  # chord iterations stall far from the operating point
                full = True
            if full:
                dx = np.linalg.solve(jacobian(m, v), f)
            else:
                dx = lu_solve(self._lu, f)
            va[self.pvpq] -= dx[:npvpq]
            vm[m.pq] -= dx[npvpq:]
            v = vm * np.exp(1j * va)
            it += 1
        if not converged:
            nan = np.full(len(m.bus_pos), np.nan)
            return FlowResult(False, nan, np.full(len(m.line_rows), np.nan),
                              np.full(len(m.trafo_rows), np.nan), None, it)
        if full:
            self.refactor(v)
            self.refactors += 1
        ll, tl = m.loadings(v)
        return FlowResult(True, vm[m.bus_pos], ll, tl, v, it)
