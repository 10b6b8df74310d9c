"""One lean AC power flow: pandapower's internal model built once, sparse Newton-Raphson on it.

`pandapower.runpp` spends most of its time in pandas bookkeeping (building the internal model,
extracting results), not in the Newton solve. A twin, a safety gate or a sensitivity study
re-solves the same network with new bus injections thousands of times, so `NetModel` keeps
pandapower's internal model (Ybus, Yf, Yt, bus types, lookups) from one converged `runpp`, and
`newton` iterates on it: polar Newton-Raphson with the same mismatch equations and tolerance
as pandapower, a numba-filled sparse Jacobian on a fixed sparsity pattern, SuperLU
factorisation (scipy; LAPACK's dense LU for small feeders, where it is faster), warm start
from the last solution. Results are numpy arrays only.
Callers rebuild the model (one `runpp`) when topology, taps or element states change.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandapower as pp
import scipy.sparse as sp
from numba import njit
from scipy.sparse.linalg import splu


class ModelError(RuntimeError):
    """The net has no converged power flow to take a model from, or uses a feature this
    lean model does not reproduce (callers fall back to `pandapower.runpp`)."""


@njit(cache=True)
def _fill_jacobian(yp, yj, yx, v, pos11, pos12, pos21, pos22, data):
    """Jacobian entries for every Ybus nonzero into `data` (fixed CSC pattern), and the
    complex power mismatch base V*conj(Ybus V) returned per bus."""
    nb = v.size
    s_calc = np.empty(nb, np.complex128)
    vm = np.abs(v)
    for i in range(nb):
        cur = 0j
        for idx in range(yp[i], yp[i + 1]):
            cur += yx[idx] * v[yj[idx]]
        s_calc[i] = v[i] * np.conj(cur)
        for idx in range(yp[i], yp[i + 1]):
            k = yj[idx]
            yv = yx[idx] * v[k]
            a = -1j * v[i] * np.conj(yv)  # dS_i/dVa_k
            m = v[i] * np.conj(yv) / vm[k]  # dS_i/dVm_k
            if k == i:
                a += 1j * v[i] * np.conj(cur)
                m += np.conj(cur) * v[i] / vm[i]
            if pos11[idx] >= 0:
                data[pos11[idx]] = a.real
            if pos12[idx] >= 0:
                data[pos12[idx]] = m.real
            if pos21[idx] >= 0:
                data[pos21[idx]] = a.imag
            if pos22[idx] >= 0:
                data[pos22[idx]] = m.imag
    return s_calc


@njit(cache=True)
def _s_calc(yp, yj, yx, v):
    nb = v.size
    out = np.empty(nb, np.complex128)
    for i in range(nb):
        cur = 0j
        for idx in range(yp[i], yp[i + 1]):
            cur += yx[idx] * v[yj[idx]]
        out[i] = v[i] * np.conj(cur)
    return out


DENSE_MAX = 100  # Newton unknowns up to which the dense LU is faster (CIGRE MV/LV; see solve)


class JacobianPattern:
    """The fixed sparsity of the polar Newton Jacobian [[dP/dVa, dP/dVm], [dQ/dVa, dQ/dVm]]
    (rows P at pv+pq, Q at pq; columns Va at pv+pq, Vm at pq) and where each Ybus nonzero lands."""

    def __init__(self, ybus, pv: np.ndarray, pq: np.ndarray):
        nb = ybus.shape[0]
        y = sp.csr_matrix(ybus, dtype=np.complex128, copy=True)
        # explicit diagonal (a bus with no branch still needs its own entry)
        y = (y + sp.csr_matrix((np.full(nb, 1e-300 + 0j), (np.arange(nb), np.arange(nb))), shape=(nb, nb))).tocsr()
        y.data[np.abs(y.data) == 1e-300] = 0.0
        y.sum_duplicates()
        y.sort_indices()
        self.yp = y.indptr.astype(np.int64)
        self.yj = y.indices.astype(np.int64)
        self.yx = y.data.astype(np.complex128)
        self.pvpq = np.r_[pv, pq].astype(np.int64)
        self.pq = np.asarray(pq, np.int64)
        n1, n2 = len(self.pvpq), len(self.pq)
        self.n = n1 + n2
        p_row = np.full(nb, -1, np.int64)
        p_row[self.pvpq] = np.arange(n1)
        q_row = np.full(nb, -1, np.int64)
        q_row[self.pq] = n1 + np.arange(n2)
        rows_of = np.repeat(np.arange(nb), np.diff(self.yp))
        k = self.yj
        # candidate entries (row, col) per nonzero for the four blocks
        blocks = [(p_row[rows_of], p_row[k]), (p_row[rows_of], q_row[k]),
                  (q_row[rows_of], p_row[k]), (q_row[rows_of], q_row[k])]
        rr, cc, tag = [], [], []
        nnz_y = len(k)
        for b, (r, c) in enumerate(blocks):
            ok = (r >= 0) & (c >= 0)
            rr.append(r[ok])
            cc.append(c[ok])
            tag.append(b * nnz_y + np.flatnonzero(ok))
        rr, cc, tag = np.concatenate(rr), np.concatenate(cc), np.concatenate(tag)
        # CSC order of the entries: sort by column, then row
        order = np.lexsort((rr, cc))
        self.indices = rr[order].astype(np.int32)
        self.indptr = np.r_[0, np.cumsum(np.bincount(cc, minlength=self.n))].astype(np.int32)
        where = np.empty(len(order), np.int64)
        where[order] = np.arange(len(order))
        pos = np.full(4 * nnz_y, -1, np.int64)
        pos[tag] = where
        self.pos = [pos[b * nnz_y:(b + 1) * nnz_y].copy() for b in range(4)]
        self.data = np.zeros(len(order))
        cols = np.repeat(np.arange(self.n), np.diff(self.indptr))
        self.dense = self.n <= DENSE_MAX
        self._flat = self.indices.astype(np.int64) * self.n + cols  # C-order position in the dense J

    def fill(self, v: np.ndarray) -> np.ndarray:
        """Jacobian entries at voltages v into `data`; returns S_calc = V conj(Ybus V)."""
        return _fill_jacobian(self.yp, self.yj, self.yx, v, *self.pos, self.data)

    def evaluate(self, v: np.ndarray):
        """(J as scipy CSC, S_calc = V conj(Ybus V)) at voltages v."""
        s_calc = self.fill(v)
        return sp.csc_matrix((self.data.copy(), self.indices, self.indptr), shape=(self.n, self.n)), s_calc

    def solve(self, f: np.ndarray) -> np.ndarray:
        """J^-1 f for the Jacobian last filled: LAPACK's dense LU up to DENSE_MAX unknowns (a
        sparse factorisation's set-up costs more than the whole solve there), SuperLU above.
        Raises np.linalg.LinAlgError for a singular Jacobian."""
        if self.dense:
            jac = np.zeros(self.n * self.n)
            jac[self._flat] = self.data
            return np.linalg.solve(jac.reshape(self.n, self.n), f)
        try:
            return splu(sp.csc_matrix((self.data, self.indices, self.indptr), shape=(self.n, self.n))).solve(f)
        except RuntimeError as e:  # SuperLU: exactly singular
            raise np.linalg.LinAlgError(str(e)) from None

    def s_calc(self, v: np.ndarray) -> np.ndarray:
        return _s_calc(self.yp, self.yj, self.yx, v)


@dataclass
class NewtonResult:
    v: np.ndarray  # complex internal voltages (the last iterate when not converged)
    converged: bool
    iterations: int
    s_calc: np.ndarray  # V conj(Ybus V) per bus at v (pu)


def newton(pattern: JacobianPattern, sbus: np.ndarray, v0: np.ndarray, pv, pq,
           tol: float = 1e-8, max_iter: int = 30) -> NewtonResult:
    """Polar Newton-Raphson: converged when max |mismatch| (pu, P at pv+pq, Q at pq) < tol,
    pandapower's own criterion (`tolerance_mva`, in pu of sn_mva)."""
    pvpq, pq = pattern.pvpq, pattern.pq
    n1 = len(pvpq)
    v = np.array(v0, dtype=np.complex128)
    va, vm = np.angle(v), np.abs(v)
    it = 0
    while True:
        s_calc = pattern.fill(v)
        mis = s_calc - sbus
        f = np.concatenate((mis.real[pvpq], mis.imag[pq]))
        if not np.all(np.isfinite(f)):
            return NewtonResult(v, False, it, s_calc)
        if f.size == 0 or np.max(np.abs(f)) < tol:
            return NewtonResult(v, True, it, s_calc)
        if it >= max_iter:
            return NewtonResult(v, False, it, s_calc)
        try:
            dx = pattern.solve(f)
        except np.linalg.LinAlgError:  # singular Jacobian: no solution from here
            return NewtonResult(v, False, it, s_calc)
        va[pvpq] -= dx[:n1]
        vm[pq] -= dx[n1:]
        v = vm * np.exp(1j * va)
        it += 1


@dataclass
class NetModel:
    """The internal admittance model of a converged pandapower net, with the lookups that map
    pandapower buses/branches onto it (what a fast solver or a linearisation needs)."""

    ybus: object  # scipy sparse, internal bus order
    yf: object
    yt: object
    v: np.ndarray  # complex voltages of the converged solution
    ref: np.ndarray
    pv: np.ndarray
    pq: np.ndarray
    base_mva: float
    bus_index: np.ndarray  # pandapower bus index, in net.bus order
    bus_pos: np.ndarray  # internal position of each pandapower bus (>= n internal: out of service)
    line_rows: np.ndarray  # internal branch row of each line (net.line order; -1: out of service)
    trafo_rows: np.ndarray
    c_from: np.ndarray  # loading % per pu current, from side, per internal branch row
    c_to: np.ndarray
    sbus: np.ndarray  # complex injections (pu) of the converged solution
    f_bus: np.ndarray | None = None  # internal from/to bus of each internal branch row
    t_bus: np.ndarray | None = None
    _pattern: JacobianPattern | None = None

    @property
    def n_bus(self) -> int:
        return self.ybus.shape[0]

    @property
    def pattern(self) -> JacobianPattern:
        if self._pattern is None:
            self._pattern = JacobianPattern(self.ybus, self.pv, self.pq)
        return self._pattern

    def solve(self, sbus: np.ndarray, v0: np.ndarray | None = None, tol: float = 1e-8,
              max_iter: int = 30) -> NewtonResult:
        """Newton-Raphson for internal injections sbus (pu), from v0 (default: the model's V)."""
        return newton(self.pattern, sbus, self.v if v0 is None else v0, self.pv, self.pq, tol, max_iter)

    @classmethod
    def from_net(cls, net: pp.pandapowerNet) -> NetModel:
        if not net.get("converged", False) or net.get("_ppc") is None:
            raise ModelError("no converged power flow on this net: run pandapower.runpp first")
        internal = net._ppc["internal"]
        v = internal["V"]
        nb = len(v)
        bus_index = net.bus.index.to_numpy()
        pos = np.asarray(net._pd2ppc_lookups["bus"][bus_index], dtype=np.int64)
        vm_pp = net.res_bus.vm_pu.to_numpy()
        ok = np.isfinite(vm_pp)
        if (pos[ok] >= nb).any() or not np.allclose(np.abs(v[pos[ok]]), vm_pp[ok], atol=1e-6):
            raise ModelError("internal bus order does not match pandapower results (unsupported net)")
        base_mva = float(internal["baseMVA"])
        br_is = np.asarray(internal.get("branch_is", np.ones(internal["Yf"].shape[0], bool)), bool)
        internal_row = np.full(len(br_is), -1, np.int64)
        internal_row[br_is] = np.arange(int(br_is.sum()))
        nbr = internal["Yf"].shape[0]
        if nbr != int(br_is.sum()):
            raise ModelError("internal branch table does not match pandapower's branch lookup")
        c_from, c_to = np.zeros(nbr), np.zeros(nbr)
        lk = net._pd2ppc_lookups["branch"]
        vn = net.bus.vn_kv
        s3 = np.sqrt(3.0)
        line_rows = trafo_rows = np.zeros(0, np.int64)
        if "line" in lk and len(net.line):
            a, b = lk["line"]
            line_rows = internal_row[a:b]
            on = line_rows >= 0
            i_max = (net.line.max_i_ka * net.line.df * net.line.parallel).to_numpy()
            c_from[line_rows[on]] = (100.0 * base_mva / (s3 * vn.loc[net.line.from_bus].to_numpy()) / i_max)[on]
            c_to[line_rows[on]] = (100.0 * base_mva / (s3 * vn.loc[net.line.to_bus].to_numpy()) / i_max)[on]
        if "trafo" in lk and len(net.trafo):
            a, b = lk["trafo"]
            trafo_rows = internal_row[a:b]
            on = trafo_rows >= 0
            t = net.trafo
            den = (t.sn_mva * t.parallel * t.get("df", 1.0)).to_numpy()
            c_from[trafo_rows[on]] = (100.0 * base_mva * t.vn_hv_kv.to_numpy() / (vn.loc[t.hv_bus].to_numpy() * den))[on]
            c_to[trafo_rows[on]] = (100.0 * base_mva * t.vn_lv_kv.to_numpy() / (vn.loc[t.lv_bus].to_numpy() * den))[on]
        from pandapower.pypower.idx_brch import F_BUS, T_BUS

        br = net._ppc["internal"]["branch"]
        f_bus = np.real(br[:, F_BUS]).astype(np.int64)
        t_bus = np.real(br[:, T_BUS]).astype(np.int64)
        m = cls(sp.csr_matrix(internal["Ybus"]), sp.csr_matrix(internal["Yf"]), sp.csr_matrix(internal["Yt"]),
                v.copy(), np.asarray(internal["ref"], np.int64), np.asarray(internal["pv"], np.int64),
                np.asarray(internal["pq"], np.int64), base_mva, bus_index, pos, line_rows, trafo_rows,
                c_from, c_to, internal["Sbus"].copy(), f_bus, t_bus)
        ll, tl = m.loadings(m.v)
        for name, mine, theirs in (("line", ll, net.res_line.loading_percent.to_numpy()),
                                   ("trafo", tl, net.res_trafo.loading_percent.to_numpy())):
            good = np.isfinite(theirs) & (np.abs(theirs) > 1e-3)
            if good.any() and not np.allclose(mine[good], theirs[good], rtol=1e-4, atol=1e-3):
                raise ModelError(f"{name} loading model does not match pandapower (unsupported net)")
        return m

    def loadings(self, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Line and transformer loading % for internal voltages v (0 for out-of-service rows)."""
        ld = np.maximum(np.abs(self.yf @ v) * self.c_from, np.abs(self.yt @ v) * self.c_to)
        ld = np.append(ld, 0.0)  # row -1 (out of service) reads the trailing 0
        return ld[self.line_rows], ld[self.trafo_rows]

    def losses_mw(self, v: np.ndarray) -> float:
        """Active losses of every in-service branch (MW): sum of P_from + P_to."""
        sf = v[self.f_bus] * np.conj(self.yf @ v)
        st = v[self.t_bus] * np.conj(self.yt @ v)
        return float(np.sum(sf.real + st.real) * self.base_mva)

    def bus_vm(self, v: np.ndarray) -> np.ndarray:
        """|V| per pandapower bus (net.bus order), NaN for buses outside the model."""
        return np.append(np.abs(v), np.nan)[np.minimum(self.bus_pos, self.n_bus)]

    def bus_va_deg(self, v: np.ndarray) -> np.ndarray:
        return np.append(np.degrees(np.angle(v)), np.nan)[np.minimum(self.bus_pos, self.n_bus)]


@dataclass
class FlowResult:
    converged: bool
    v_pu: np.ndarray  # pandapower bus order
    line_loading_pct: np.ndarray
    trafo_loading_pct: np.ndarray
    v: np.ndarray | None = None  # internal complex voltages
    iterations: int = 0


class LeanFlow:
    """Repeated Newton-Raphson on `model` with load changes (kW/kvar, load convention) per slot.

    `slot_pos`: internal bus position of each slot; `p0_kw`/`q0_kvar`: the slot loads the
    model's converged solution was computed with. Each solve starts from the last converged
    solution (warm start). This is the what-if solver of the safety gate and volt/var.
    """

    def __init__(self, model: NetModel, slot_pos: np.ndarray, p0_kw: np.ndarray, q0_kvar: np.ndarray,
                 tol_pu: float = 1e-8, max_iter: int = 30):
        self.m = model
        self.slot_pos = np.asarray(slot_pos, np.int64)
        self.tol = tol_pu
        self.max_iter = max_iter
        self.s_fixed = model.sbus.copy()
        np.add.at(self.s_fixed, self.slot_pos,
                  (np.asarray(p0_kw) + 1j * np.asarray(q0_kvar)) / 1000.0 / model.base_mva)
        self.v_warm = model.v.copy()
        self.solves = 0
        self.refactors = 0

    def refactor(self, v: np.ndarray) -> None:
        """Start the next solves from v (an operating point the caller trusts)."""
        self.v_warm = np.array(v, dtype=np.complex128)

    def sbus(self, p_kw, q_kvar) -> np.ndarray:
        s = self.s_fixed.copy()
        np.add.at(s, self.slot_pos, -(np.asarray(p_kw) + 1j * np.asarray(q_kvar)) / 1000.0 / self.m.base_mva)
        return s

    def solve(self, p_kw, q_kvar, v0: np.ndarray | None = None) -> FlowResult:
        self.solves += 1
        m = self.m
        r = m.solve(self.sbus(p_kw, q_kvar), self.v_warm if v0 is None else v0, self.tol, self.max_iter)
        if not r.converged and v0 is None and not np.array_equal(self.v_warm, m.v):
            r = m.solve(self.sbus(p_kw, q_kvar), m.v, self.tol, self.max_iter)  # retry from the model's point
        if not r.converged:
            nan = np.full(len(m.bus_pos), np.nan)
            return FlowResult(False, nan, np.full(len(m.line_rows), np.nan),
                              np.full(len(m.trafo_rows), np.nan), None, r.iterations)
        self.v_warm = r.v
        ll, tl = m.loadings(r.v)
        return FlowResult(True, m.bus_vm(r.v), ll, tl, r.v, r.iterations)
