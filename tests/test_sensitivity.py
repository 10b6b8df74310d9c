"""Jacobian sensitivities against finite differences of full AC power flows, and the cache
refreshing only when the operating point moves."""

import warnings

import numpy as np
import pandapower as pp
import pytest

from grid_models.feeders import build_feeder
from grid_models.sensitivity import SensitivityCache, SensitivityError, compute_sensitivities


@pytest.fixture(scope="module")
def lv():
    net = build_feeder("cigre_lv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net)
    return net


def finite_difference(net, bus, kind, kw=0.5):
    v0 = net.res_bus.vm_pu.to_numpy().copy()
    l0 = net.res_line.loading_percent.to_numpy().copy()
    t0 = net.res_trafo.loading_percent.to_numpy().copy()
    i = pp.create_load(net, bus, p_mw=kw / 1000 if kind == "p" else 0.0,
                       q_mvar=kw / 1000 if kind == "q" else 0.0)
    pp.runpp(net)
    out = ((net.res_bus.vm_pu.to_numpy() - v0) / kw, (net.res_line.loading_percent.to_numpy() - l0) / kw,
           (net.res_trafo.loading_percent.to_numpy() - t0) / kw)
    net.load.drop(i, inplace=True)
    pp.runpp(net)
    return out


@pytest.mark.parametrize("bus", [16, 35, 43])
def test_matches_finite_differences(lv, bus):
    s = compute_sensitivities(lv)
    c = int(np.flatnonzero(s.col_bus == bus)[0])
    for kind, dv, dl, dt in (("p", s.dv_dp, s.dline_dp, s.dtrafo_dp), ("q", s.dv_dq, s.dline_dq, s.dtrafo_dq)):
        fv, fl, ft = finite_difference(lv, bus, kind)
        assert np.abs(fv).max() > 1e-5  # a real effect to compare against
        # 0.5 kW steps: what is left is second order (|I| bends when Q adds to P)
        assert np.abs(dv[:, c] - fv).max() < 0.03 * np.abs(fv).max()
        loaded = np.abs(fl) > 0.05 * np.abs(fl).max()  # branches the injection actually loads
        assert np.abs(dl[loaded, c] - fl[loaded]).max() < 0.1 * np.abs(fl).max()
        assert np.abs(dt[:, c] - ft).max() < 0.1 * np.abs(ft).max() + 1e-4
    # more load lowers voltage downstream; the slack bus does not move
    assert (s.dv_dp[:, c] <= 1e-12).all() and s.dv_dp[0, c] == 0.0


def test_cache_refreshes_only_when_state_moves(lv):
    cache = SensitivityCache(dv_threshold_pu=0.01)
    cache.get(lv)
    cache.get(lv)
    assert cache.refreshes == 1
    i = pp.create_load(lv, 43, p_mw=0.05)
    pp.runpp(lv)
    cache.get(lv)
    assert cache.refreshes == 2  # 50 kW at the far end moves voltages by more than 0.01 pu
    lv.load.drop(i, inplace=True)
    pp.runpp(lv)


def test_needs_a_converged_flow():
    with pytest.raises(SensitivityError):
        compute_sensitivities(build_feeder("cigre_lv"))
