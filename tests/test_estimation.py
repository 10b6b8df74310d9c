"""State estimation on the twin's noisy telemetry: error bound against the true state, and a
gross measurement error detected (chi-square) and removed (largest normalised residual)."""

import warnings

import numpy as np
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
