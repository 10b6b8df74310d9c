"""The twin's repeated AC power flow on one feeder with DER injections per bus.

The feeder's own loads and generators keep their pandapower rows; the twin's DER fleet enters
as one extra load row per DER bus ("twin_der"). The first run (and the first after a change of
topology, taps or element states) is a full `pandapower.runpp`, whose internal model becomes a
`grid_models.lean_flow.NetModel`; every other run only rebuilds the bus injection vector with
numpy and solves with the lean Newton-Raphson from the last solution. A lean solve that does
not converge is retried with `runpp` (its own initialisation) before the interval is reported
as failed.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandapower as pp

from grid_models.lean_flow import ModelError, NetModel
from grid_models.limits import Violation, check_limits


@dataclass
class PowerFlowResult:
    converged: bool
    v_pu: np.ndarray  # per bus, in `PowerFlow.bus_index` order
    va_deg: np.ndarray
    line_loading_pct: np.ndarray
    trafo_loading_pct: np.ndarray
    p_head_kw: float  # import at the feeder head(s), load convention
    q_head_kvar: float
    losses_kw: float
    load_p_kw: float  # feeder's own loads after scaling
    sgen_p_kw: float  # feeder's own generators (negative: generation, load convention)
    der_p_kw: float  # twin DER fleet, load convention
    iterations: int = 0


class PowerFlowError(RuntimeError):
    """Newton-Raphson did not converge; the caller decides whether to carry on."""


_STATE_COLUMNS = (("switch", "closed"), ("trafo", "tap_pos"), ("trafo", "in_service"), ("line", "in_service"),
                  ("bus", "in_service"), ("load", "in_service"), ("sgen", "in_service"),
                  ("ext_grid", "in_service"), ("ext_grid", "vm_pu"), ("gen", "in_service"), ("gen", "vm_pu"),
                  ("storage", "in_service"), ("shunt", "in_service"), ("shunt", "step"))


class PowerFlow:
    """Repeated AC power flow on one net with DER injections per bus (see module doc).

    `lean=False` runs `pandapower.runpp` (with recycle) every time and keeps the net's result
    tables filled; the safety gate uses it to rebuild its own model.
    """

    def __init__(self, net: pp.pandapowerNet, der_buses, use_numba: bool = True, lean: bool = True,
                 tol_pu: float = 1e-8):
        self.net = net
        self.bus_index = net.bus.index.to_numpy()
        self.line_index = net.line.index.to_numpy()
        self.trafo_index = net.trafo.index.to_numpy()
        self._bus_pos = {int(b): i for i, b in enumerate(self.bus_index)}
        self.der_buses = np.unique(np.asarray(der_buses, dtype=np.int64))
        first = len(net.load)
        if len(self.der_buses):  # one call: create_load per bus costs ms each on big feeders
            pp.create_loads(net, buses=self.der_buses, p_mw=0.0, q_mvar=0.0, name="twin_der")
        self._der_rows = net.load.index[first:].to_numpy()
        self._own_load_rows = net.load.index[:first].to_numpy()
        self._own_load_p = net.load.loc[self._own_load_rows, "p_mw"].to_numpy().copy()
        self._own_load_q = net.load.loc[self._own_load_rows, "q_mvar"].to_numpy().copy()
        self._sgen_p = net.sgen.p_mw.to_numpy().copy()
        self._sgen_q = net.sgen.q_mvar.to_numpy().copy()
        self._sgen_is_pv = net.sgen.type.astype(str).str.upper().str.contains("PV").to_numpy()
        self._use_numba = use_numba
        self._lean_ok = lean
        self.lean = lean
        self.tol_pu = tol_pu
        self._recycle_ok = False
        self.model: NetModel | None = None
        self._key = None
        self.runs = 0
        self.full_runs = 0  # runpp calls (model builds and fallbacks)

    def bus_position(self, bus: int) -> int:
        return self._bus_pos[int(bus)]

    def invalidate(self) -> None:
        """Topology or element state changed (breaker, tap): next run rebuilds its internals."""
        self._recycle_ok = False
        self.model = None

    # --- injections -------------------------------------------------------------------------------
    def _injections(self, der_p_kw, der_q_kvar, load_scale, pv_scale, other_sgen_scale, load_scale_per_row,
                    sgen_p_kw=None):
        """Per-row P/Q (MW/Mvar, load convention for loads, generation for sgens)."""
        scale = load_scale if load_scale_per_row is None else load_scale * load_scale_per_row
        lp = np.concatenate((self._own_load_p * scale, np.asarray(der_p_kw, dtype=float) / 1000.0))
        lq = np.concatenate((self._own_load_q * scale, np.asarray(der_q_kvar, dtype=float) / 1000.0))
        if sgen_p_kw is not None:
            gp = np.asarray(sgen_p_kw, dtype=float) / 1000.0
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = np.where(self._sgen_p != 0, gp / np.where(self._sgen_p != 0, self._sgen_p, 1.0), 0.0)
            gq = self._sgen_q * ratio
        else:
            sg = np.where(self._sgen_is_pv, pv_scale, other_sgen_scale)
            gp, gq = self._sgen_p * sg, self._sgen_q * sg
        return lp, lq, gp, gq

    def _state_key(self) -> bytes:
        net = self.net
        parts = []
        for tab, col in _STATE_COLUMNS:
            t = net.get(tab, None)
            if t is not None and len(t) and col in t:
                parts.append(t[col].to_numpy().tobytes())
        return b"|".join(parts)

    # --- solving ----------------------------------------------------------------------------------
    def run(self, der_p_kw: np.ndarray, der_q_kvar: np.ndarray, load_scale: float = 1.0,
            pv_scale: float = 1.0, other_sgen_scale: float = 1.0,
            load_scale_per_row: np.ndarray | None = None, sgen_p_kw: np.ndarray | None = None) -> PowerFlowResult:
        """Solve with DER injections given per `der_buses` entry (kW/kvar, load convention).

        Feeder sgens: `sgen_p_kw` per row (generation positive; Q scales with P) or, without
        it, rating x pv_scale for PV rows and x other_sgen_scale for the others."""
        inj = self._injections(der_p_kw, der_q_kvar, load_scale, pv_scale, other_sgen_scale,
                               load_scale_per_row, sgen_p_kw)
        self.runs += 1
        if self.lean and self._lean_ok:
            if self.model is not None and self._key != self._state_key():
                self.invalidate()  # runpp's recycle would keep the old Ybus too
            if self.model is not None:
                res = self._run_lean(*inj)
                if res is not None:
                    return res
        return self._run_pandapower(*inj)

    def _run_pandapower(self, lp, lq, gp, gq) -> PowerFlowResult:
        net = self.net
        self.full_runs += 1
        rows = np.r_[self._own_load_rows, self._der_rows]
        net.load.loc[rows, "p_mw"] = lp
        net.load.loc[rows, "q_mvar"] = lq
        if len(net.sgen):
            net.sgen["p_mw"] = gp
            net.sgen["q_mvar"] = gq
        converged = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                tol = min(1e-8, self.tol_pu)
                # While the lean solver carries the repeated solves, runpp runs only to build
                # or rebuild its model: pandapower's pure-Python Newton (~0.5 s first call)
                # is then cheaper than compiling its numba kernels (~5 s per process).
                numba = self._use_numba and not (self.lean and self._lean_ok)
                if self._recycle_ok:
                    pp.runpp(net, numba=numba, init="results", tolerance_mva=tol,
                             recycle=dict(trafo=False, gen=False, bus_pq=True))
                else:
                    pp.runpp(net, numba=numba, tolerance_mva=tol)
                    self._recycle_ok = True
            except pp.LoadflowNotConverged:
                converged = False
                self._recycle_ok = False
        if converged and self.lean and self._lean_ok:
            self._build_model(lp, lq, gp, gq)
        return self._result_from_net(converged)

    def _build_model(self, lp, lq, gp, gq) -> None:
        """Take the internal model of the net's converged runpp; split its injections into the
        rows this object varies and a fixed rest (other elements, gens, wards)."""
        net = self.net
        try:
            if len(net.load) and (net.load.filter(like="const_").abs().to_numpy().sum() > 0):
                raise ModelError("voltage-dependent loads (const_z/const_i) need runpp")
            m = NetModel.from_net(net)
        except ModelError:
            self._lean_ok = False  # this net stays on runpp
            self.model = None
            return
        nb = m.n_bus
        lk = net._pd2ppc_lookups["bus"]
        rows = np.r_[self._own_load_rows, self._der_rows]
        lpos = np.asarray(lk[net.load.bus.loc[rows].to_numpy()], np.int64)
        lw = (net.load.scaling.loc[rows] * net.load.in_service.loc[rows]).to_numpy(float)
        lw[lpos >= nb] = 0.0
        lpos = np.minimum(lpos, nb - 1)
        if len(net.sgen):
            gpos = np.asarray(lk[net.sgen.bus.to_numpy()], np.int64)
            gw = (net.sgen.scaling * net.sgen.in_service).to_numpy(float)
            gw[gpos >= nb] = 0.0
            gpos = np.minimum(gpos, nb - 1)
        else:
            gpos, gw = np.zeros(0, np.int64), np.zeros(0)
        self._lpos, self._lw, self._gpos, self._gw = lpos, lw, gpos, gw
        self._base_mva = m.base_mva
        s_var = self._s_var(lp, lq, gp, gq, nb)
        s_fixed = m.sbus - s_var
        # at the slack buses Sbus is not an equation: there the fixed rest is the bus demand
        # of pandapower's internal bus table (loads, sgens, wards; not the ext_grid), so that
        # head P/Q = S_calc - Sbus carries no trace of the build's Newton truncation
        from pandapower.pypower.idx_bus import PD, QD

        ref = m.ref
        bus_tab = net._ppc["internal"]["bus"]
        s_fixed[ref] = -(bus_tab[ref, PD] + 1j * bus_tab[ref, QD]) / m.base_mva - s_var[ref]
        eg_pos = np.asarray(lk[net.ext_grid.bus.to_numpy()], np.int64)
        self._s_fixed = s_fixed
        self._head_buses = np.unique(eg_pos[eg_pos < nb])
        self.model = m
        self._v = m.v.copy()
        self._key = self._state_key()

    def _s_var(self, lp, lq, gp, gq, nb) -> np.ndarray:
        re = np.bincount(self._lpos, weights=-lp * self._lw, minlength=nb)
        im = np.bincount(self._lpos, weights=-lq * self._lw, minlength=nb)
        if len(self._gpos):
            re += np.bincount(self._gpos, weights=gp * self._gw, minlength=nb)
            im += np.bincount(self._gpos, weights=gq * self._gw, minlength=nb)
        return (re + 1j * im) / self._base_mva

    def _run_lean(self, lp, lq, gp, gq) -> PowerFlowResult | None:
        m = self.model
        sbus = self._s_fixed + self._s_var(lp, lq, gp, gq, m.n_bus)
        r = m.solve(sbus, self._v, self.tol_pu)
        if not r.converged:
            return None  # runpp tries from its own start (and reports the failure honestly)
        self._v = r.v
        v = r.v
        head = (r.s_calc - sbus)[self._head_buses].sum() * m.base_mva
        ll, tl = m.loadings(v)
        nl = len(self._own_load_rows)
        lw = self._lw
        load_p = float(np.dot(lp[:nl], lw[:nl]) * 1000.0)
        der_p = float(np.dot(lp[nl:], lw[nl:]) * 1000.0)
        sgen_p = float(-np.dot(gp, self._gw) * 1000.0) if len(self._gpos) else 0.0
        return PowerFlowResult(True, m.bus_vm(v), m.bus_va_deg(v), ll, tl, float(head.real * 1000.0),
                               float(head.imag * 1000.0), m.losses_mw(v) * 1000.0, load_p, sgen_p, der_p,
                               r.iterations)

    def _result_from_net(self, converged: bool) -> PowerFlowResult:
        net = self.net
        nb = len(self.bus_index)
        if not converged:
            nan = np.full(nb, np.nan)
            return PowerFlowResult(False, nan, nan.copy(), np.full(len(self.line_index), np.nan),
                                   np.full(len(self.trafo_index), np.nan), np.nan, np.nan, np.nan,
                                   np.nan, np.nan, np.nan)
        losses = net.res_line.pl_mw.sum() + (net.res_trafo.pl_mw.sum() if len(net.trafo) else 0.0)
        if len(net.trafo3w):
            losses += net.res_trafo3w.pl_mw.sum()
        return PowerFlowResult(
            True,
            net.res_bus.vm_pu.to_numpy().copy(),
            net.res_bus.va_degree.to_numpy().copy(),
            net.res_line.loading_percent.to_numpy().copy(),
            net.res_trafo.loading_percent.to_numpy().copy() if len(net.trafo) else np.zeros(0),
            float(net.res_ext_grid.p_mw.sum() * 1000.0),
            float(net.res_ext_grid.q_mvar.sum() * 1000.0),
            float(losses * 1000.0),
            float(net.res_load.p_mw.loc[self._own_load_rows].sum() * 1000.0),
            float(-net.res_sgen.p_mw.sum() * 1000.0) if len(net.sgen) else 0.0,
            float(net.res_load.p_mw.loc[self._der_rows].sum() * 1000.0),
            int(net._ppc["iterations"]) if net.get("_ppc") is not None and "iterations" in net._ppc else 0,
        )

    def violations(self, res: PowerFlowResult, limits) -> list[Violation]:
        if not res.converged:
            return [Violation("not_converged", -1, float("nan"), float("nan"))]
        return check_limits(res.v_pu, self.bus_index, res.line_loading_pct, self.line_index,
                            res.trafo_loading_pct, self.trafo_index, limits)
