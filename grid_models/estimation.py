"""The controller's own view of the feeder: WLS state estimation from noisy, partial telemetry.

Wraps `pandapower.estimation` (weighted least squares) with the two classic bad-data checks:
the chi-square test on the weighted residual sum (is there bad data at all?) and the largest
normalised residual test (which measurement is it? remove it, re-estimate, repeat). Buses
without a P/Q measurement get pseudo-measurements (the feeder's nominal load, with a wide
standard deviation) so a partially metered feeder stays observable. Values in the load sign
convention, kW/kvar and pu, indices are pandapower bus/line indices.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandapower as pp
import pandas as pd
from pandapower.estimation import remove_bad_data
from pandapower.estimation.ppc_conversion import _initialize_voltage
from pandapower.estimation.state_estimation import StateEstimation


class EstimationError(RuntimeError):
    """The estimator could not produce a state (unobservable or not converging)."""


@dataclass
class Measurements:
    """One snapshot of telemetry. Arrays of equal length per kind; std in the value's unit."""

    v_bus: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    v_pu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    v_std_pu: float | np.ndarray = 0.003
    pq_bus: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    p_kw: np.ndarray = field(default_factory=lambda: np.zeros(0))  # bus total, load convention
    q_kvar: np.ndarray = field(default_factory=lambda: np.zeros(0))
    pq_std_kw: float | np.ndarray = 1.0
    line: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # flows at the from side
    line_p_kw: np.ndarray = field(default_factory=lambda: np.zeros(0))
    line_q_kvar: np.ndarray = field(default_factory=lambda: np.zeros(0))
    line_std_kw: float | np.ndarray = 1.0


@dataclass
class StateEstimate:
    converged: bool
    bus_index: np.ndarray
    v_pu: np.ndarray
    va_deg: np.ndarray
    p_kw: np.ndarray  # estimated bus injection, load convention
    q_kvar: np.ndarray
    bad_data_detected: bool  # chi-square test on the first estimate
    removed: list[dict]  # measurements removed by the largest-normalised-residual test
    n_measurements: int

    def base_load(self, device_bus, device_p_kw, device_q_kvar):
        """Per-bus load that the managed devices do not explain (for `GridSnapshot`)."""
        p = self.p_kw.copy()
        q = self.q_kvar.copy()
        pos = np.searchsorted(self.bus_index, np.asarray(device_bus, np.int64))
        np.add.at(p, pos, -np.asarray(device_p_kw, float))
        np.add.at(q, pos, -np.asarray(device_q_kvar, float))
        return self.bus_index.copy(), p, q


class StateEstimator:
    """Holds a copy of the feeder topology; `run(measurements)` returns a `StateEstimate`."""

    def __init__(self, net: pp.pandapowerNet, device_buses=(), pseudo_std_frac: float = 0.5,
                 pseudo_std_min_kw: float = 2.0, chi2_prob_false: float = 0.05, rn_max_threshold: float = 3.0):
        self.net = copy.deepcopy(net)
        self.net.measurement.drop(self.net.measurement.index, inplace=True)
        self.bus_index = self.net.bus.index.to_numpy()
        self.pseudo_std_frac = pseudo_std_frac
        self.pseudo_std_min_kw = pseudo_std_min_kw
        self.chi2_prob_false = chi2_prob_false
        self.rn_max_threshold = rn_max_threshold
        n = self.net
        # pseudo-measurements: nominal load minus nominal generation per bus (kW, load convention)
        p0 = np.zeros(len(self.bus_index))
        q0 = np.zeros(len(self.bus_index))
        pos = {int(b): i for i, b in enumerate(self.bus_index)}
        for tab, sign in (("load", 1.0), ("sgen", -1.0)):
            t = n[tab][n[tab].in_service]
            for b, p, q in zip(t.bus, t.p_mw, t.q_mvar):
                p0[pos[int(b)]] += sign * p * 1000.0
                q0[pos[int(b)]] += sign * q * 1000.0
        self.pseudo_p_kw, self.pseudo_q_kvar = p0, q0
        has_inj = np.zeros(len(self.bus_index), bool)
        for tab in ("load", "sgen", "storage", "gen", "ext_grid"):
            for b in n[tab].bus:
                has_inj[pos[int(b)]] = True
        for b in device_buses:  # managed devices can inject anywhere they are connected
            has_inj[pos[int(b)]] = True
        self.slack_buses = _fused_with(n, {int(b) for b in n.ext_grid.bus})
        self.has_injection = has_inj
        self._is_slack = np.isin(self.bus_index, np.fromiter(self.slack_buses, np.int64, len(self.slack_buses)))
        self._index_of = {"bus": self.bus_index, "line": self.net.line.index.to_numpy()}
        self._columns = list(self.net.measurement.columns)

    def _table(self, m: Measurements, pseudo_scale: float) -> pd.DataFrame:
        """The measurement table, built at once as one DataFrame (196 `pp.create_measurement`
        calls cost a third of a run on CIGRE MV): rows in the order those calls made them,
        pandapower's columns and dtypes, index 0..n-1; elements checked as create_measurement
        checks them (UserWarning naming the element)."""
        def part(kind, element_type, values, std, elements, side=None):
            values = np.asarray(values, float).ravel()
            elements = np.asarray(elements, np.int64).ravel()
            std = np.broadcast_to(np.asarray(std, float), values.shape)
            missing = np.setdiff1d(elements, self._index_of[element_type])
            if len(missing):
                raise UserWarning(f"{element_type} with index={int(missing[0])} does not exist")
            return kind, element_type, values, std, elements, side

        pq_std = np.asarray(m.pq_std_kw, float) / 1000.0
        parts = [part("v", "bus", m.v_pu, m.v_std_pu, m.v_bus),
                 part("p", "bus", np.asarray(m.p_kw, float) / 1000.0, pq_std, m.pq_bus),
                 part("q", "bus", np.asarray(m.q_kvar, float) / 1000.0, pq_std, m.pq_bus)]
        if len(m.line):
            lstd = np.asarray(m.line_std_kw, float) / 1000.0
            parts += [part("p", "line", np.asarray(m.line_p_kw, float) / 1000.0, lstd, m.line, side="from"),
                      part("q", "line", np.asarray(m.line_q_kvar, float) / 1000.0, lstd, m.line, side="from")]
        # pseudo-measurements: buses without P/Q telemetry, p then q per bus
        pseudo = ~np.isin(self.bus_index, np.asarray(m.pq_bus, np.int64)) & ~self._is_slack
        p_kw = np.where(self.has_injection, self.pseudo_p_kw * pseudo_scale, 0.0)[pseudo]
        q_kvar = np.where(self.has_injection, self.pseudo_q_kvar * pseudo_scale, 0.0)[pseudo]
        s_kw = np.where(self.has_injection[pseudo],
                        np.maximum(self.pseudo_std_frac * np.abs(p_kw), self.pseudo_std_min_kw), 0.01)
        k = len(p_kw)
        parts.append((np.tile(np.array(["p", "q"], object), k), "bus",
                      np.column_stack([p_kw / 1000.0, q_kvar / 1000.0]).ravel(),
                      np.repeat(s_kw / 1000.0, 2), np.repeat(self.bus_index[pseudo], 2), None))
        n = sum(len(x[2]) for x in parts)
        col = {"name": np.full(n, None, object), "measurement_type": np.empty(n, object),
               "element_type": np.empty(n, object), "element": np.empty(n, np.uint32),
               "value": np.empty(n), "std_dev": np.empty(n), "side": np.full(n, None, object)}
        at = 0
        for kind, element_type, values, std, elements, side in parts:
            sl = slice(at, at + len(values))
            col["measurement_type"][sl] = kind
            col["element_type"][sl] = element_type
            col["element"][sl] = elements
            col["value"][sl] = values
            col["std_dev"][sl] = std
            col["side"][sl] = side
            at = sl.stop
        return pd.DataFrame(col, index=pd.Index(np.arange(n, dtype=np.int64)))[self._columns]

    def run(self, m: Measurements, pseudo_scale: float = 1.0) -> StateEstimate:
        """Estimate the state; pseudo-measurements (nominal load x pseudo_scale) fill the buses
        without P/Q telemetry. Raises EstimationError when WLS fails."""
        net = self.net
        net.measurement = self._table(m, pseudo_scale)
        n_meas = len(net.measurement)
        before = net.measurement[["measurement_type", "element_type", "element", "value"]].copy()
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            # maximum_iterations: the wrappers default to 10, too few from a flat start on LV
            # feeders (15 seen on CIGRE LV); they then fail with an AttributeError on solver.r
            try:  # a WLS that does not converge fails inside pandapower (solver.r is None)
                # chi2_analysis's own estimate (flat start, wls, tolerance 1e-6, aux-bus zero
                # injection: what `estimate` would compute again) is the result when it passes
                se = StateEstimation(net, tolerance=1e-6, maximum_iterations=50, algorithm="wls")
                v0, d0 = _initialize_voltage(net, "flat")
                bad = bool(se.perform_chi2_test(v0, d0, True, self.chi2_prob_false))
                ok = remove_bad_data(net, init="flat", maximum_iterations=50,
                                     rn_max_threshold=self.rn_max_threshold) if bad else \
                    bool(se.solver.successful)
            except (AttributeError, ValueError, np.linalg.LinAlgError) as e:
                raise EstimationError(f"state estimation did not converge: {e}") from None
        if not ok or "res_bus_est" not in net or net.res_bus_est.vm_pu.isna().all():
            raise EstimationError("state estimation did not converge (check observability and measurements)")
        gone = before.index.difference(net.measurement.index)
        removed = [{"type": r.measurement_type, "element_type": r.element_type, "element": int(r.element),
                    "value": float(r.value)} for r in before.loc[gone].itertuples()]
        est = net.res_bus_est
        return StateEstimate(True, self.bus_index.copy(), est.vm_pu.to_numpy().copy(),
                             est.va_degree.to_numpy().copy(), est.p_mw.to_numpy() * 1000.0,
                             est.q_mvar.to_numpy() * 1000.0, bad, removed, n_meas)


def _fused_with(net, buses: set[int]) -> set[int]:
    """Buses joined to `buses` by closed bus-bus switches (one node in the power flow)."""
    sw = net.switch[(net.switch.et == "b") & net.switch.closed]
    pairs = list(zip(sw.bus.astype(int), sw.element.astype(int)))
    out = set(buses)
    for _ in range(len(pairs) + 1):
        grown = out | {b for a, b in pairs if a in out} | {a for a, b in pairs if b in out}
        if grown == out:
            break
        out = grown
    return out


class _quiet:
    """pandapower.estimation logs each removal at WARNING; keep the controller's log clean."""

    def __enter__(self):
        self.logger = logging.getLogger("pandapower.estimation")
        self.level = self.logger.level
        self.logger.setLevel(logging.ERROR)

    def __exit__(self, *exc):
        self.logger.setLevel(self.level)


_warm = False


def warm_up() -> None:
    """Run one estimate on a 2-bus net so that pandapower compiles the numba kernels its WLS
    estimator always uses (it forces numba=True; ~2 s per process on first use). A controller
    calls this while it is assembled, so its first estimate does not pay the compile mid-cycle."""
    global _warm
    if _warm:
        return
    net = pp.create_empty_network()
    b0, b1 = pp.create_bus(net, 20.0), pp.create_bus(net, 20.0)
    pp.create_ext_grid(net, b0)
    pp.create_line_from_parameters(net, b0, b1, 1.0, 0.1, 0.1, 10.0, 0.4)
    pp.create_load(net, b1, 0.1, 0.05)
    m = Measurements(v_bus=np.array([b0, b1]), v_pu=np.array([1.0, 0.999]),
                     pq_bus=np.array([b1]), p_kw=np.array([100.0]), q_kvar=np.array([50.0]))
    try:
        StateEstimator(net).run(m)
    except EstimationError:
        pass  # only the compile matters here
    _warm = True
