"""State estimation on the twin's noisy telemetry: error bound against the true state, and a
gross measurement error detected (chi-square) and removed (largest normalised residual)."""

import copy
import warnings

import numpy as np
import pandas as pd
import pytest

from grid_models.estimation import Measurements, StateEstimator
from grid_models.feeders import build_feeder, load_buses
from scenarios.model import Scenario
from twin.simulation import Twin

V_STD_PU = 0.003
# stated bounds (voltage meters 3 mpu std at load buses and the substation, P/Q smart meters
# on 70 % of load buses, pseudo-measurements elsewhere): over all 44 buses
V_ERROR_BOUND_PU = 0.008  # max |v_est - v_true|
V_RMS_BOUND_PU = 0.003  # root-mean-square error


@pytest.fixture(scope="module")
def truth():
    sc = Scenario.model_validate({
        "name": "se", "start": "2026-06-21T11:00:00Z", "duration_s": 300, "seed": 2, "device_step_s": 10,
        "feeder": {"kind": "cigre_lv"},
        "fleet": [{"name": "pv", "kind": "pv", "count": 20, "params": {"p_peak_kw": 10, "s_rated_kva": 10}},
               {"name": "bat", "kind": "battery", "count": 8, "params": {"p_max_kw": 5}}],
        "outputs": {"report": False}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tw = Twin(sc)
        tw.fleets["bat"].p_set_kw[:] = 4.0
        tw.run_until(120)
        tw.solve_power_flow()
    net = tw.net
    dev_buses = np.unique(np.concatenate([f.bus for f in tw.fleets.values()]))
    return {"v": net.res_bus.vm_pu.to_numpy().copy(), "p": net.res_bus.p_mw.to_numpy() * 1000,
                "q": net.res_bus.q_mvar.to_numpy() * 1000, "bus": net.bus.index.to_numpy(),
                "head_line_p": None, "dev_buses": dev_buses}


def measure(truth, rng, metered_share=0.7):
    """Voltage at every load bus and the substation; P/Q at 70 % of load buses (smart meters)."""
    net = build_feeder("cigre_lv")
    lb = np.array(load_buses(net))
    vb = np.r_[[1, 2], lb]
    pb = np.sort(rng.choice(lb, int(metered_share * len(lb)), replace=False))
    pos = {int(b): i for i, b in enumerate(truth["bus"])}
    vi = [pos[int(b)] for b in vb]
    pi = [pos[int(b)] for b in pb]
    p_std = 0.5 + 0.02 * np.abs(truth["p"][pi])
    return net, Measurements(
        v_bus=vb, v_pu=truth["v"][vi] + V_STD_PU * rng.standard_normal(len(vb)), v_std_pu=V_STD_PU,
        pq_bus=pb, p_kw=truth["p"][pi] + p_std * rng.standard_normal(len(pb)),
        q_kvar=truth["q"][pi] + p_std * rng.standard_normal(len(pb)), pq_std_kw=p_std)


def test_estimate_within_bound_of_true_state(truth):
    errs = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        net, m = measure(truth, rng)
        se = StateEstimator(net, device_buses=truth["dev_buses"])
        est = se.run(m)
        assert est.converged
        err = np.abs(est.v_pu - truth["v"])
        errs.append(err.max())
        assert np.sqrt(np.mean(err ** 2)) < V_RMS_BOUND_PU
        # the estimate beats the raw meters on the measured buses (WLS averages over the model)
        pos = np.searchsorted(est.bus_index, m.v_bus)
        assert np.sqrt(np.mean(err[pos] ** 2)) < np.sqrt(np.mean((m.v_pu - truth["v"][pos]) ** 2))
    assert max(errs) < V_ERROR_BOUND_PU, errs


def test_gross_error_detected_and_removed(truth):
    rng = np.random.default_rng(7)
    net, m = measure(truth, rng)
    k = int(np.flatnonzero(m.v_bus == 40)[0])
    m.v_pu[k] += 0.08  # a voltage transducer gone wrong
    se = StateEstimator(net, device_buses=truth["dev_buses"])
    est = se.run(m)
    assert est.bad_data_detected
    assert {"type": "v", "element_type": "bus", "element": 40} in \
        [{k2: r[k2] for k2 in ("type", "element_type", "element")} for r in est.removed]
    assert len(est.removed) <= 2
    assert np.abs(est.v_pu - truth["v"]).max() < V_ERROR_BOUND_PU


def test_clean_data_passes_chi2_and_base_load(truth):
    rng = np.random.default_rng(11)
    net, m = measure(truth, rng)
    se = StateEstimator(net, device_buses=truth["dev_buses"])
    est = se.run(m)
    assert not est.removed
    bus, p, _q = est.base_load(truth["dev_buses"][:1], [5.0], [0.0])
    i = int(np.searchsorted(bus, truth["dev_buses"][0]))
    assert p[i] == pytest.approx(est.p_kw[i] - 5.0)
    # head balance: estimated injections sum to the slack's import (losses are small)
    assert abs(p.sum() + 5.0 - est.p_kw.sum()) < 1e-9


def _reference_estimate(se, m, pseudo_scale):
    """What StateEstimator.run computed before its speed-up: one pp.create_measurement per
    value, pandapower's chi2_analysis and then `estimate` again (the result read from the net)."""
    import pandapower as pp
    from pandapower.estimation import chi2_analysis, estimate

    net = copy.deepcopy(se.net)
    net.measurement.drop(net.measurement.index, inplace=True)

    def add(kind, et, values, std, elements, side=None):
        std = np.broadcast_to(np.asarray(std, float), np.shape(values))
        for v, s, e in zip(values, std, elements):
            pp.create_measurement(net, kind, et, float(v), float(s), int(e), side=side)

    pq_std = np.asarray(m.pq_std_kw, float) / 1000.0
    add("v", "bus", m.v_pu, m.v_std_pu, m.v_bus)
    add("p", "bus", np.asarray(m.p_kw) / 1000.0, pq_std, m.pq_bus)
    add("q", "bus", np.asarray(m.q_kvar) / 1000.0, pq_std, m.pq_bus)
    lstd = np.asarray(m.line_std_kw, float) / 1000.0
    add("p", "line", np.asarray(m.line_p_kw) / 1000.0, lstd, m.line, side="from")
    add("q", "line", np.asarray(m.line_q_kvar) / 1000.0, lstd, m.line, side="from")
    metered = {int(b) for b in m.pq_bus}
    for i, b in enumerate(se.bus_index):
        if int(b) in metered or int(b) in se.slack_buses:
            continue
        if not se.has_injection[i]:
            p, q, s = 0.0, 0.0, 0.01
        else:
            p, q = se.pseudo_p_kw[i] * pseudo_scale, se.pseudo_q_kvar[i] * pseudo_scale
            s = max(se.pseudo_std_frac * abs(p), se.pseudo_std_min_kw)
        pp.create_measurement(net, "p", "bus", p / 1000.0, s / 1000.0, int(b))
        pp.create_measurement(net, "q", "bus", q / 1000.0, s / 1000.0, int(b))
    table = net.measurement.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert not chi2_analysis(net, init="flat", maximum_iterations=50)
        assert estimate(net, init="flat", maximum_iterations=50)["success"]
    return table, net.res_bus_est.copy()


def test_measurement_table_and_estimate_equal_the_per_call_build(truth):
    """The measurement table built as one DataFrame equals pandapower's create_measurement rows
    (order, index, dtypes; bus, line and pseudo-measurements), and the estimate taken from the
    chi-square test's own WLS run equals estimating again, to 1e-9 pu / 1e-9 kW."""
    rng = np.random.default_rng(11)
    net, m = measure(truth, rng)
    m.line = np.array([0, 1, 2])
    m.line_p_kw, m.line_q_kvar = np.array([60.0, 40.0, 30.0]), np.array([10.0, 8.0, 5.0])
    m.line_std_kw = np.array([400.0, 400.0, 500.0])  # loose: the values are not the true flows
    se = StateEstimator(net, device_buses=truth["dev_buses"])
    table, ref = _reference_estimate(se, m, 0.7)
    pd.testing.assert_frame_equal(se._table(m, 0.7), table)
    est = se.run(m, pseudo_scale=0.7)
    assert not est.bad_data_detected and est.n_measurements == len(table)
    assert np.abs(est.v_pu - ref.vm_pu.to_numpy()).max() < 1e-9
    assert np.abs(est.va_deg - ref.va_degree.to_numpy()).max() < 1e-9
    assert np.abs(est.p_kw - ref.p_mw.to_numpy() * 1000.0).max() < 1e-9
    assert np.abs(est.q_kvar - ref.q_mvar.to_numpy() * 1000.0).max() < 1e-9
    with pytest.raises(UserWarning, match="bus with index=999 does not exist"):
        se._table(Measurements(v_bus=np.array([999]), v_pu=np.array([1.0])), 1.0)
