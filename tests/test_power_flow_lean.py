"""The lean power flow (grid_models.lean_flow via grid_models.power_flow.PowerFlow) against
`pandapower.runpp` on the same injections: CIGRE MV, CIGRE LV, SimBench MV rural and the
SimBench MV/LV rural grid (5,479 buses), many random injection sets each, and a case that
does not converge, which must be reported as such.

The reference is pandapower's pure-Python Newton-Raphson (`numba=False`): the same answer as
its numba path, without compiling pandapower's numba kernels in the test process (most of
this file's time before). Both sides are solved to a mismatch below 1e-10 pu (runpp's `tolerance_mva`, the lean
solver's `tol_pu`): at pandapower's default 1e-8 the slack absorbs up to 1e-8 MW of
truncation, which is the size of the 1e-6 kW being compared.
"""

import copy
import warnings

import numpy as np
import pandapower as pp
import pytest

from grid_models.feeders import build_feeder, build_feeder_cached, load_buses
from grid_models.lean_flow import LeanFlow, NetModel
from grid_models.power_flow import PowerFlow

TOL_PU = 1e-10


def reference(net, pf: PowerFlow, der_p_kw, der_q_kvar, load_scale, pv_scale, other_scale):
    """The same injections written into a copy of the net and solved by runpp."""
    ref = net  # the reference net is only ever solved by runpp
    own, der = pf._own_load_rows, pf._der_rows
    ref.load.loc[own, "p_mw"] = pf._own_load_p * load_scale
    ref.load.loc[own, "q_mvar"] = pf._own_load_q * load_scale
    ref.load.loc[der, "p_mw"] = der_p_kw / 1000.0
    ref.load.loc[der, "q_mvar"] = der_q_kvar / 1000.0
    if len(ref.sgen):
        sg = np.where(pf._sgen_is_pv, pv_scale, other_scale)
        ref.sgen["p_mw"] = pf._sgen_p * sg
        ref.sgen["q_mvar"] = pf._sgen_q * sg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(ref, tolerance_mva=TOL_PU, numba=False)
    return ref


def compare(res, ref, pf):
    """Largest differences: bus |V| and angle, head P/Q, losses (kW), line/trafo loading."""
    losses = ref.res_line.pl_mw.sum() + ref.res_trafo.pl_mw.sum()
    return {
        "v_pu": np.nanmax(np.abs(res.v_pu - ref.res_bus.vm_pu.to_numpy())),
        "va_deg": np.nanmax(np.abs(res.va_deg - ref.res_bus.va_degree.to_numpy())),
        "head_p_kw": abs(res.p_head_kw - ref.res_ext_grid.p_mw.sum() * 1000.0),
        "head_q_kvar": abs(res.q_head_kvar - ref.res_ext_grid.q_mvar.sum() * 1000.0),
        "losses_kw": abs(res.losses_kw - losses * 1000.0),
        "line_pct": np.nanmax(np.abs(res.line_loading_pct - ref.res_line.loading_percent.to_numpy())),
        "trafo_pct": (np.nanmax(np.abs(res.trafo_loading_pct - ref.res_trafo.loading_percent.to_numpy()))
                      if len(ref.trafo) else 0.0),
    }


FEEDERS = [  # (kind, code, random sets, DER kW scale per bus)
    ("cigre_mv", None, 12, 300.0),
    ("cigre_lv", None, 12, 5.0),
    ("simbench", "1-MV-rural--0-sw", 8, 60.0),
    ("simbench", "1-MVLV-rural-all-0-sw", 2, 2.0),
]


@pytest.mark.parametrize("kind,code,n_sets,der_kw", FEEDERS, ids=[c or k for k, c, _, _ in FEEDERS])
def test_lean_power_flow_equals_runpp(kind, code, n_sets, der_kw):
    net = copy.deepcopy(build_feeder_cached(kind, code))  # SimBench CSV parsing once per process
    buses = load_buses(net)
    pristine = copy.deepcopy(net)
    pf = PowerFlow(net, buses, tol_pu=TOL_PU, use_numba=False)
    pristine_pf = PowerFlow(pristine, buses, lean=False, use_numba=False)  # only to add the same twin_der rows
    rng = np.random.default_rng(7)
    worst: dict[str, float] = {}
    lean_runs = 0
    for _ in range(n_sets):
        m = len(pf.der_buses)
        p = rng.uniform(-der_kw, der_kw, m)
        q = rng.uniform(-0.3, 0.3, m) * der_kw
        ls, pv, other = rng.uniform(0.2, 1.3), rng.uniform(0.0, 1.0), rng.uniform(0.0, 1.0)
        before = pf.full_runs
        res = pf.run(p, q, load_scale=ls, pv_scale=pv, other_sgen_scale=other)
        lean_runs += pf.full_runs == before
        assert res.converged
        ref = reference(pristine_pf.net, pristine_pf, p, q, ls, pv, other)
        for k, v in compare(res, ref, pf).items():
            worst[k] = max(worst.get(k, 0.0), float(v))
    print(kind, code, {k: f"{v:.1e}" for k, v in worst.items()})
    assert lean_runs == n_sets - 1  # the first run builds the model with runpp, the rest are lean
    assert worst["v_pu"] < 1e-8
    assert worst["va_deg"] < 1e-6
    assert worst["head_p_kw"] < 1e-6 and worst["head_q_kvar"] < 1e-6
    assert worst["losses_kw"] < 1e-6
    assert worst["line_pct"] < 1e-4 and worst["trafo_pct"] < 1e-4


def test_non_converging_interval_is_reported_not_hidden():
    """A load far beyond what the feeder can carry: runpp fails, and so must the lean path
    (no NaN dressed up as a result, no silent reuse of the last solution)."""
    net = build_feeder("cigre_mv")
    pf = PowerFlow(net, load_buses(net), use_numba=False)
    m = len(pf.der_buses)
    ok = pf.run(np.zeros(m), np.zeros(m))
    assert ok.converged and pf.model is not None
    bad = pf.run(np.full(m, 40_000.0), np.full(m, 20_000.0))
    assert not bad.converged
    assert np.isnan(bad.v_pu).all() and np.isnan(bad.p_head_kw)
    ref = copy.deepcopy(net)
    ref.load.loc[pf._der_rows, "p_mw"] = 40.0
    ref.load.loc[pf._der_rows, "q_mvar"] = 20.0
    with pytest.raises(pp.LoadflowNotConverged), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(ref, numba=False)
    # and the next sane interval converges again
    again = pf.run(np.zeros(m), np.zeros(m))
    assert again.converged
    assert again.v_pu == pytest.approx(ok.v_pu, abs=1e-9)


def test_model_rebuilds_when_a_switch_changes():
    """A changed breaker is seen without invalidate(): the state key differs, runpp rebuilds,
    and the answer is the changed feeder's."""
    net = build_feeder("cigre_mv")
    pf = PowerFlow(net, load_buses(net), use_numba=False)
    m = len(pf.der_buses)
    p = np.full(m, 200.0)
    r0 = pf.run(p, np.zeros(m))
    net.switch.loc[4, "closed"] = True  # S1 closes the ring
    full = pf.full_runs
    r1 = pf.run(p, np.zeros(m))
    assert pf.full_runs == full + 1
    assert np.nanmax(np.abs(r1.v_pu - r0.v_pu)) > 1e-4
    ref_net = build_feeder("cigre_mv")
    ref_net.switch.loc[4, "closed"] = True
    fresh = PowerFlow(ref_net, load_buses(ref_net), lean=False, use_numba=False)
    r_ref = fresh.run(p, np.zeros(m))
    r2 = pf.run(p, np.zeros(m))  # lean again
    assert pf.full_runs == full + 1
    assert np.nanmax(np.abs(r2.v_pu - r_ref.v_pu)) < 1e-8


def test_what_if_solver_equals_runpp():
    """LeanFlow (the safety gate's what-if solver): per-slot load changes on a built model."""
    net = build_feeder("cigre_lv")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net, tolerance_mva=TOL_PU, numba=False)
    model = NetModel.from_net(net)
    buses = np.array(load_buses(net))
    slot_pos = model.bus_pos[np.searchsorted(model.bus_index, buses)]
    lf = LeanFlow(model, slot_pos, np.zeros(len(buses)), np.zeros(len(buses)), tol_pu=TOL_PU)
    rng = np.random.default_rng(3)
    for _ in range(10):
        p, q = rng.uniform(-10, 15, len(buses)), rng.uniform(-3, 3, len(buses))
        r = lf.solve(p, q)
        ref = copy.deepcopy(net)
        for b, pk, qk in zip(buses, p, q):
            pp.create_load(ref, int(b), p_mw=pk / 1000, q_mvar=qk / 1000)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pp.runpp(ref, tolerance_mva=TOL_PU, numba=False)
        assert r.converged
        assert np.nanmax(np.abs(r.v_pu - ref.res_bus.vm_pu.to_numpy())) < 1e-8
        assert np.nanmax(np.abs(r.line_loading_pct - ref.res_line.loading_percent.to_numpy())) < 1e-4
