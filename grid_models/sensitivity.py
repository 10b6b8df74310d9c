"""Voltage and branch-loading sensitivities to bus injections, from the power-flow Jacobian.

After a converged `pandapower.runpp` the net holds its internal model (`net._ppc["internal"]`:
Ybus, Yf, Yt, V, ref/pv/pq). Solving the Jacobian for unit injections gives dV/dP and dV/dQ
at every bus and, through the branch admittances, d(loading %)/dP and /dQ for every line and
transformer. The safety gate and volt/var use these for a fast linear screen; a full power flow
confirms. Inputs and outputs are in pandapower indices and the load sign convention
(kW/kvar consumed at the bus), so a positive dp_kw is more load.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandapower as pp
from scipy.sparse.linalg import splu

from grid_models.lean_flow import ModelError, NetModel

SensitivityError = ModelError  # the net has no converged power flow to linearise around

__all__ = [
    "NetModel",
    "Sensitivities",
    "SensitivityCache",
    "SensitivityError",
    "compute_sensitivities",
    "linearize",
]


@dataclass
class Sensitivities:
    """Linear model around one operating point; rows/columns in pandapower indices.

    Rows: `bus_index` (all buses), `line_index`, `trafo_index`. Columns: `col_bus` (the buses
    whose injection may change). Units: pu per kW / per kvar and loading % per kW / per kvar,
    load convention.
    """

    bus_index: np.ndarray
    line_index: np.ndarray
    trafo_index: np.ndarray
    col_bus: np.ndarray
    v_pu: np.ndarray  # voltages at the operating point
    line_loading_pct: np.ndarray
    trafo_loading_pct: np.ndarray
    dv_dp: np.ndarray  # (n_bus, n_col)
    dv_dq: np.ndarray
    dline_dp: np.ndarray  # (n_line, n_col)
    dline_dq: np.ndarray
    dtrafo_dp: np.ndarray  # (n_trafo, n_col)
    dtrafo_dq: np.ndarray

    def predict(self, dp_kw: np.ndarray, dq_kvar: np.ndarray):
        """Voltages and loadings after injection changes per `col_bus` (linear estimate)."""
        v = self.v_pu + self.dv_dp @ dp_kw + self.dv_dq @ dq_kvar
        ll = self.line_loading_pct + self.dline_dp @ dp_kw + self.dline_dq @ dq_kvar
        tl = self.trafo_loading_pct + self.dtrafo_dp @ dp_kw + self.dtrafo_dq @ dq_kvar
        return v, ll, tl


def linearize(m: NetModel, v: np.ndarray, col_pos: np.ndarray, col_bus: np.ndarray) -> Sensitivities:
    """Sensitivities of the model at voltages v for unit loads at internal buses col_pos."""
    nb = len(v)
    pv, pq = m.pv, m.pq
    pvpq = np.r_[pv, pq]
    jac, _ = m.pattern.evaluate(v)  # the lean power flow's sparse Jacobian
    n_pvpq, n_pq = len(pvpq), len(pq)
    ncol = len(col_pos)
    row_p = np.full(nb, -1)
    row_p[pvpq] = np.arange(n_pvpq)
    row_q = np.full(nb, -1)
    row_q[pq] = n_pvpq + np.arange(n_pq)
    rhs = np.zeros((n_pvpq + n_pq, 2 * ncol))
    unit = -1e-3 / m.base_mva  # +1 kW / kvar of load = -1 kW of injection, in pu
    cols = np.arange(ncol)
    hp = row_p[col_pos] >= 0
    rhs[row_p[col_pos][hp], cols[hp]] = unit
    hq = row_q[col_pos] >= 0
    rhs[row_q[col_pos][hq], ncol + cols[hq]] = unit
    sol = splu(jac).solve(rhs) if rhs.size else rhs
    vm = np.abs(v)
    dva = np.zeros((nb, 2 * ncol))
    dvm = np.zeros((nb, 2 * ncol))
    dva[pvpq] = sol[:n_pvpq]
    dvm[pq] = sol[n_pvpq:]
    dv = v[:, None] * (1j * dva + dvm / vm[:, None])
    i_f, i_t = m.yf @ v, m.yt @ v
    use_from = np.abs(i_f) * m.c_from >= np.abs(i_t) * m.c_to
    i_side = np.where(use_from, i_f, i_t)
    c_side = np.where(use_from, m.c_from, m.c_to)
    i_abs = np.abs(i_side)
    unit_dir = np.where(i_abs > 1e-9, np.conj(i_side) / np.maximum(i_abs, 1e-12), 0.0)
    di = np.where(use_from[:, None], _dense(m.yf @ dv), _dense(m.yt @ dv))
    d_load = c_side[:, None] * np.real(unit_dir[:, None] * di)
    # an idle branch has no direction to linearise |I| around: use |dI| (an upper bound)
    idle = i_abs <= 1e-9
    d_load[idle] = c_side[idle, None] * np.abs(di[idle])
    ll, tl = m.loadings(v)
    dvm_pp = dvm[m.bus_pos]
    d_load = np.vstack([d_load, np.zeros((1, d_load.shape[1]))])  # row -1: out-of-service branch
    dl = d_load[m.line_rows]
    dt = d_load[m.trafo_rows]
    return Sensitivities(
        bus_index=m.bus_index, line_index=np.arange(len(m.line_rows)), trafo_index=np.arange(len(m.trafo_rows)),
        col_bus=np.asarray(col_bus), v_pu=vm[m.bus_pos], line_loading_pct=ll, trafo_loading_pct=tl,
        dv_dp=dvm_pp[:, :ncol], dv_dq=dvm_pp[:, ncol:], dline_dp=dl[:, :ncol], dline_dq=dl[:, ncol:],
        dtrafo_dp=dt[:, :ncol], dtrafo_dq=dt[:, ncol:])


def compute_sensitivities(net: pp.pandapowerNet, col_bus=None) -> Sensitivities:
    """Sensitivities at the net's last converged power flow for injections at `col_bus`
    (default: every bus). Raises SensitivityError when there is no converged result."""
    m = NetModel.from_net(net)
    col_bus = m.bus_index if col_bus is None else np.asarray(col_bus, dtype=np.int64)
    col_pos = np.asarray(net._pd2ppc_lookups["bus"][col_bus], dtype=np.int64)
    s = linearize(m, m.v, col_pos, col_bus)
    s.line_index = net.line.index.to_numpy()
    s.trafo_index = net.trafo.index.to_numpy()
    return s


def _dense(m):
    return m.toarray() if hasattr(m, "toarray") else np.asarray(m)


class SensitivityCache:
    """Keeps one `Sensitivities` and recomputes it only when the operating point has moved:
    any bus voltage by more than `dv_threshold_pu`, or after `invalidate()` (topology, taps)."""

    def __init__(self, col_bus=None, dv_threshold_pu: float = 0.01):
        self.col_bus = col_bus
        self.dv_threshold_pu = dv_threshold_pu
        self.current: Sensitivities | None = None
        self.refreshes = 0

    def invalidate(self) -> None:
        self.current = None

    def get(self, net: pp.pandapowerNet) -> Sensitivities:
        vm = net.res_bus.vm_pu.to_numpy()
        cur = self.current
        if cur is None or cur.v_pu.shape != vm.shape or \
                np.nanmax(np.abs(cur.v_pu - vm)) > self.dv_threshold_pu:
            self.current = compute_sensitivities(net, self.col_bus)
            self.refreshes += 1
        return self.current
