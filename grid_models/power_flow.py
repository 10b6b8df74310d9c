"""A PowerFlow object that keeps one pandapower net and re-runs it with new injections.

The twin's DER injections enter as one extra load element per bus ("twin_der" rows),
so a step only rewrites p_mw/q_mvar columns and pandapower's `recycle` options can
reuse the admittance matrix and the numba-compiled internals between runs.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandapower as pp

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


class PowerFlowError(RuntimeError):
    """Newton-Raphson did not converge; the caller decides whether to carry on."""


class PowerFlow:
    """Repeated AC power flow on one net with DER injections per bus."""

    def __init__(self, net: pp.pandapowerNet, der_buses, use_numba: bool = True):
        self.net = net
        self.bus_index = net.bus.index.to_numpy()
        self.line_index = net.line.index.to_numpy()
        self.trafo_index = net.trafo.index.to_numpy()
        self._bus_pos = {int(b): i for i, b in enumerate(self.bus_index)}
        self.der_buses = np.unique(np.asarray(der_buses, dtype=np.int64))
        first = len(net.load)
        for b in self.der_buses:
            pp.create_load(net, bus=int(b), p_mw=0.0, q_mvar=0.0, name="twin_der")
        self._der_rows = net.load.index[first:].to_numpy()
        self._own_load_rows = net.load.index[:first].to_numpy()
        self._own_load_p = net.load.loc[self._own_load_rows, "p_mw"].to_numpy().copy()
        self._own_load_q = net.load.loc[self._own_load_rows, "q_mvar"].to_numpy().copy()
        self._sgen_p = net.sgen.p_mw.to_numpy().copy()
        self._sgen_q = net.sgen.q_mvar.to_numpy().copy()
        self._sgen_is_pv = net.sgen.type.astype(str).str.upper().str.contains("PV").to_numpy()
        self._use_numba = use_numba
        self._recycle_ok = False
        self.runs = 0

    def bus_position(self, bus: int) -> int:
        return self._bus_pos[int(bus)]

    def invalidate(self) -> None:
        """Topology or element state changed (breaker, tap): next run rebuilds its internals."""
        self._recycle_ok = False

    def run(self, der_p_kw: np.ndarray, der_q_kvar: np.ndarray, load_scale: float = 1.0,
            pv_scale: float = 1.0, other_sgen_scale: float = 1.0,
            load_scale_per_row: np.ndarray | None = None) -> PowerFlowResult:
        """Solve with DER injections given per `der_buses` entry (kW/kvar, load convention)."""
        net = self.net
        scale = load_scale if load_scale_per_row is None else load_scale * load_scale_per_row
        net.load.loc[self._own_load_rows, "p_mw"] = self._own_load_p * scale
        net.load.loc[self._own_load_rows, "q_mvar"] = self._own_load_q * scale
        net.load.loc[self._der_rows, "p_mw"] = np.asarray(der_p_kw, dtype=float) / 1000.0
        net.load.loc[self._der_rows, "q_mvar"] = np.asarray(der_q_kvar, dtype=float) / 1000.0
        if len(net.sgen):
            sg = np.where(self._sgen_is_pv, pv_scale, other_sgen_scale)
            net.sgen["p_mw"] = self._sgen_p * sg
            net.sgen["q_mvar"] = self._sgen_q * sg
        converged = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                if self._recycle_ok:
                    pp.runpp(net, numba=self._use_numba, init="results",
                             recycle=dict(trafo=False, gen=False, bus_pq=True))
                else:
                    pp.runpp(net, numba=self._use_numba)
                    self._recycle_ok = True
            except pp.LoadflowNotConverged:
                converged = False
                self._recycle_ok = False
        self.runs += 1
        return self._result(converged)

    def _result(self, converged: bool) -> PowerFlowResult:
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
        )

    def violations(self, res: PowerFlowResult, limits) -> list[Violation]:
        if not res.converged:
            return [Violation("not_converged", -1, float("nan"), float("nan"))]
        return check_limits(res.v_pu, self.bus_index, res.line_loading_pct, self.line_index,
                            res.trafo_loading_pct, self.trafo_index, limits)
