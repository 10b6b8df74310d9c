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
from pandapower.estimation import chi2_analysis, estimate, remove_bad_data


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

    def _add(self, kind, element_type, values, std, elements, side=None):
        std = np.broadcast_to(np.asarray(std, float), np.shape(values))
        for v, s, e in zip(values, std, elements):
            pp.create_measurement(self.net, kind, element_type, float(v), float(s), int(e), side=side)

    def run(self, m: Measurements, pseudo_scale: float = 1.0) -> StateEstimate:
        """Estimate the state; pseudo-measurements (nominal load x pseudo_scale) fill the buses
        without P/Q telemetry. Raises EstimationError when WLS fails."""
        net = self.net
        net.measurement.drop(net.measurement.index, inplace=True)
        self._add("v", "bus", m.v_pu, m.v_std_pu, m.v_bus)
        pq_std = np.asarray(m.pq_std_kw, float) / 1000.0
        self._add("p", "bus", np.asarray(m.p_kw) / 1000.0, pq_std, m.pq_bus)
        self._add("q", "bus", np.asarray(m.q_kvar) / 1000.0, pq_std, m.pq_bus)
        if len(m.line):
            lstd = np.asarray(m.line_std_kw, float) / 1000.0
            self._add("p", "line", np.asarray(m.line_p_kw) / 1000.0, lstd, m.line, side="from")
            self._add("q", "line", np.asarray(m.line_q_kvar) / 1000.0, lstd, m.line, side="from")
        metered = {int(b) for b in m.pq_bus}
        for i, b in enumerate(self.bus_index):
            if int(b) in metered or int(b) in self.slack_buses:
                continue  # the slack's injection is what balances the feeder: never pseudo-measured
            if not self.has_injection[i]:
                p, q, s = 0.0, 0.0, 0.01  # no element here: a (virtual) zero-injection measurement
            else:
                p = self.pseudo_p_kw[i] * pseudo_scale
                q = self.pseudo_q_kvar[i] * pseudo_scale
                s = max(self.pseudo_std_frac * abs(p), self.pseudo_std_min_kw)
            pp.create_measurement(net, "p", "bus", p / 1000.0, s / 1000.0, int(b))
            pp.create_measurement(net, "q", "bus", q / 1000.0, s / 1000.0, int(b))
        n_meas = len(net.measurement)
        before = net.measurement[["measurement_type", "element_type", "element", "value"]].copy()
        with warnings.catch_warnings(), _quiet():
            warnings.simplefilter("ignore")
            # maximum_iterations: the wrappers default to 10, too few from a flat start on LV
            # feeders (15 seen on CIGRE LV); they then fail with an AttributeError on solver.r
            try:  # a WLS that does not converge fails inside pandapower (solver.r is None)
                bad = bool(chi2_analysis(net, init="flat", maximum_iterations=50,
                                         chi2_prob_false=self.chi2_prob_false))
                ok = remove_bad_data(net, init="flat", maximum_iterations=50,
                                     rn_max_threshold=self.rn_max_threshold) if bad else \
                    _success(estimate(net, init="flat", maximum_iterations=50))
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


def _success(r) -> bool:
    return bool(r.get("success", False)) if isinstance(r, dict) else bool(r)


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
