"""Dispatch optimizer: device limits, objective sanity, DR, grid limits, aggregation and the
persistent real-time model. Every solve is a real HiGHS solve through Pyomo appsi."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from benchmarks.dispatch_problems import day_prices, random_problem
from controller.dispatch import (
    Batteries,
    DispatchProblem,
    GridSensitivity,
    ProblemError,
    PvUnits,
    Weights,
)
from controller.dispatch.dispatcher import Dispatcher

TOL = 1e-6


def _one_battery(prices, soc0=5.0, n=None):
    n = n or len(prices)
    b = Batteries(["b/0"], np.array([1]), np.array([2.0]), np.array([10.0]), np.array([soc0]),
                  np.array([1.0]), np.array([9.0]), np.array([0.95]), np.array([0.95]),
                  np.array([0.01]))
    return DispatchProblem(t0=0.0, step_s=3600.0, n_steps=n, prices_eur_per_mwh=np.asarray(prices, float),
                           net_load_forecast_kw=np.full(n, 10.0), batteries=b)


def check_limits(p: DispatchProblem, s) -> None:
    """Every device inside its own limits, simulated from the schedule's powers alone."""
    dt_h = p.step_h
    b = p.batteries
    if b is not None:
        soc = np.asarray(b.soc_kwh, float).copy()
        for i, dev in enumerate(b.device_ids):
            pk = s.p_kw[dev]
            assert np.all(np.abs(pk) <= b.p_max_kw[i] + TOL), dev
            for x in pk:
                soc[i] += (x * b.eta_ch[i] if x > 0 else x / b.eta_dis[i]) * dt_h
                assert b.soc_min_kwh[i] - 1e-5 <= soc[i] <= b.soc_max_kwh[i] + 1e-5, (dev, soc[i])
    if p.pv is not None:
        for i, dev in enumerate(p.pv.device_ids):
            gen = -s.p_kw[dev]
            assert np.all(gen >= -TOL) and np.all(gen <= p.pv.p_avail_kw[i] + TOL), dev
    e = p.evs
    if e is not None:
        for i, dev in enumerate(e.device_ids):
            pk = s.p_kw[dev]
            allowed = np.arange(p.n_steps) < (e.departure_step[i] if e.connected[i] else 0)
            assert np.all(pk >= -TOL) and np.all(pk <= e.p_max_kw[i] * allowed + TOL), dev
            delivered = pk.sum() * e.eta[i] * dt_h
            assert delivered <= e.e_need_kwh[i] + 1e-5, dev
    f = p.flex
    if f is not None:
        for i, dev in enumerate(f.device_ids):
            cut = f.p_base_kw[i] - s.p_kw[dev]
            # cut may be negative only by payback, bounded by the payback limit
            assert np.all(cut <= f.flex_share[i] * f.p_base_kw[i] + TOL), dev
            assert np.all(-cut <= f.payback_max_kw[i] + TOL), dev
    head = np.asarray(p.net_load_forecast_kw, float) + sum(s.p_kw.values())
    # the head the LP planned is what the devices deliver, up to the disaggregation residual
    assert np.abs(head - s.head_p_kw).mean() <= s.disagg_residual_kw + 1e-5


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), n_bat=st.integers(0, 6), n_pv=st.integers(0, 4),
       n_ev=st.integers(0, 4), n_flex=st.integers(0, 3), n_tcl=st.integers(0, 1),
       aggregate=st.booleans(), neg=st.booleans())
def test_schedules_respect_every_device_limit(seed, n_bat, n_pv, n_ev, n_flex, n_tcl, aggregate, neg):
    p = random_problem(n_bat=n_bat, n_pv=n_pv, n_ev=n_ev, n_flex=n_flex, n_tcl=n_tcl, n_steps=32,
                       step_s=900.0, seed=seed, t0_hour=seed % 24)
    if neg:  # negative midday prices make curtailment and charging attractive
        p.prices_eur_per_mwh = p.prices_eur_per_mwh - 90.0
    s = Dispatcher(aggregate=aggregate).day_ahead(p)
    check_limits(p, s)
    if p.evs is not None and s.objective_terms["ev_unmet_penalty_eur"] < 1e-9:
        e = p.evs  # the LP found every car's requirement feasible: each car gets it by departure
        for i, dev in enumerate(e.device_ids):
            dep = min(int(e.departure_step[i]), p.n_steps)
            got = s.p_kw[dev][:dep].sum() * e.eta[i] * p.step_h
            need = e.e_need_kwh[i] - max(int(e.departure_step[i]) - p.n_steps, 0) * e.p_max_kw[i] * e.eta[i] * p.step_h
            assert got >= need - 1e-4, (dev, got, need)
    for t in p.tcls:
        pk = s.p_kw[f"{t.name}/*"]
        assert np.all(pk >= t.p_min_kw - TOL) and np.all(pk <= t.p_max_kw + TOL)
        e_tcl = t.e0_kwh + np.cumsum((pk - t.p_base_kw) * p.step_h)
        assert np.all(e_tcl >= t.e_min_kwh - 1e-5) and np.all(e_tcl <= t.e_max_kwh + 1e-5)


def test_battery_charges_cheap_and_discharges_expensive():
    prices = day_prices(24, 3600.0)
    s = Dispatcher().day_ahead(_one_battery(prices))
    pk = s.p_kw["b/0"]
    assert pk[np.argmin(prices)] > 1.0  # charging at the cheapest hour
    assert pk[np.argmax(prices)] < -1.0  # discharging at the most expensive hour
    charge_price = (prices * np.clip(pk, 0, None)).sum() / np.clip(pk, 0, None).sum()
    dis_price = (prices * np.clip(-pk, 0, None)).sum() / np.clip(-pk, 0, None).sum()
    assert dis_price > charge_price * 0.95 ** -2  # arbitrage beats round-trip losses
    # energy-neutral by default: SOC back to its start, and the schedule saves money
    assert s.soc_kwh["b/0"][-1] == pytest.approx(5.0, abs=1e-4)
    assert s.objective_terms["energy_eur"] < float(prices @ np.full(24, 10.0)) / 1000.0


def test_flat_prices_keep_battery_idle():
    s = Dispatcher().day_ahead(_one_battery(np.full(24, 80.0)))
    assert np.abs(s.p_kw["b/0"]).max() < 1e-6  # degradation and losses make cycling a loss


def _dr_problem(reduction_kw):
    p = random_problem(n_bat=8, n_pv=0, n_ev=0, n_flex=3, n_steps=32, seed=3, identical=True)
    red = np.full(p.n_steps, np.nan)
    red[20:24] = reduction_kw
    p.dr_reduction_kw = red
    base = p.net_load_forecast_kw + p.flex.p_base_kw.sum(axis=0)
    p.dr_baseline_kw = base
    return p, base


def test_dr_target_met_when_feasible():
    p, base = _dr_problem(30.0)  # 8 x 4.5 kW batteries + 50 % of flex base > 30 kW
    s = Dispatcher().day_ahead(p)
    assert np.all(s.head_p_kw[20:24] <= base[20:24] - 30.0 + 1e-5)
    assert np.abs(s.dr_shortfall_kw).max() < 1e-6
    head = p.net_load_forecast_kw + sum(s.p_kw.values())  # delivered by the devices themselves
    assert np.all(head[20:24] <= base[20:24] - 30.0 + 1e-4)


def test_dr_shortfall_reported_when_infeasible():
    p, base = _dr_problem(500.0)
    s = Dispatcher().day_ahead(p)
    max_cut = p.batteries.p_max_kw.sum() + (0.5 * p.flex.p_base_kw[:, 20:24]).sum(axis=0)
    # the whole fleet is pushed to its limit and the gap is reported
    assert np.allclose(base[20:24] - s.head_p_kw[20:24], max_cut, atol=1e-4)
    assert np.allclose(s.dr_shortfall_kw[20:24], 500.0 - max_cut, atol=1e-4)


def test_peak_shaving_lowers_the_head_peak():
    p = random_problem(n_bat=6, n_pv=0, n_ev=0, n_flex=0, n_steps=48, seed=5, identical=True)
    plain = Dispatcher().day_ahead(p)
    p.weights = Weights(peak_eur_per_kw=50.0)
    shaved = Dispatcher().day_ahead(p)
    assert shaved.head_p_kw.max() < plain.head_p_kw.max() - 5.0


def test_voltage_sensitivity_forces_pv_curtailment():
    n = 8
    avail = np.full((1, n), 40.0)
    p = DispatchProblem(t0=0.0, step_s=900.0, n_steps=n, prices_eur_per_mwh=np.full(n, 50.0),
                        net_load_forecast_kw=np.full(n, 5.0),
                        pv=PvUnits(["pv/0"], np.array([7]), avail, np.array([50.0])),
                        grid=GridSensitivity(np.array([7]), np.array([[-0.001]]), np.full((1, n), 1.02),
                                             v_min_pu=0.95, v_max_pu=1.05))
    s = Dispatcher().day_ahead(p)
    v = 1.02 - 0.001 * s.p_kw["pv/0"]
    assert np.all(v <= 1.05 + 1e-6)
    assert s.p_kw["pv/0"] == pytest.approx(np.full(n, -30.0), abs=1e-5)  # curtailed 10 kW, no more
    assert s.setpoints == [("pv/0", "p_limit_pct", pytest.approx(60.0))]
    assert s.objective_terms["grid_penalty_eur"] < 1e-9


def test_aggregated_matches_per_device_objective():
    p = random_problem(n_bat=12, n_pv=4, n_ev=0, n_flex=4, n_tcl=1, n_steps=48, seed=11,
                       n_buses=2, identical=True)
    agg = Dispatcher(aggregate=True).day_ahead(p)
    ref = Dispatcher(aggregate=False).day_ahead(p)
    assert agg.stats.n_groups < ref.stats.n_groups
    assert agg.objective_eur == pytest.approx(ref.objective_eur, rel=1e-4)
    assert agg.disagg_residual_kw < 1e-6
    check_limits(p, agg)
    # cost of what the devices will actually do, re-evaluated from per-device powers
    head = p.net_load_forecast_kw + sum(agg.p_kw.values())
    assert float(p.prices_eur_per_mwh @ head) * p.step_h / 1000 == pytest.approx(
        ref.objective_terms["energy_eur"], rel=1e-3)


def test_realtime_reuses_persistent_model_and_matches_fresh_solve():
    d = Dispatcher()
    p1 = random_problem(n_bat=20, n_pv=5, n_ev=4, n_flex=3, n_tcl=1, n_steps=24, step_s=300.0,
                        seed=2, t0_hour=17.0)
    s1 = d.realtime(p1)
    m1 = d.last_model
    p2 = random_problem(n_bat=20, n_pv=5, n_ev=4, n_flex=3, n_tcl=1, n_steps=24, step_s=300.0,
                        seed=2, t0_hour=17.0 + 5 / 60)
    p2.batteries.soc_kwh = np.clip(s1.soc_kwh and np.array([s1.soc_kwh[i][0] for i in p1.batteries.device_ids]),
                                   p2.batteries.soc_min_kwh, p2.batteries.soc_max_kwh)
    s2 = d.realtime(p2)
    assert not s1.stats.reused_model and s2.stats.reused_model
    assert d.last_model is m1
    fresh = Dispatcher().realtime(p2)
    assert not fresh.stats.reused_model
    assert s2.objective_eur == pytest.approx(fresh.objective_eur, rel=1e-7, abs=1e-7)
    # a different fleet is a different structure: rebuilt, not reused
    p3 = random_problem(n_bat=21, n_pv=5, n_ev=4, n_flex=3, n_tcl=1, n_steps=24, step_s=300.0, seed=2)
    assert not d.realtime(p3).stats.reused_model


def test_bad_shape_is_a_one_line_error_naming_the_field():
    p = _one_battery(np.full(24, 80.0))
    p.net_load_forecast_kw = np.zeros(23)
    with pytest.raises(ProblemError, match="net_load_forecast_kw: expected length 24"):
        Dispatcher().day_ahead(p)


def _sequence(n=6, grid=False):
    """Problems of one structure whose numbers all move: prices, loads, SOCs, EV needs, TCL
    bounds, flexible base, DR target and reserve, peak/export limits, grid headroom."""
    out = []
    for k in range(n):
        p = random_problem(n_bat=9, n_pv=3, n_ev=5, n_flex=3, n_tcl=1, n_steps=24, step_s=900.0,
                           n_buses=2, seed=7, t0_hour=6.0 + k)
        rng = np.random.default_rng(k)
        b = p.batteries
        b.soc_kwh = np.clip(b.soc_kwh + rng.uniform(-1, 1, b.n), b.soc_min_kwh, b.soc_max_kwh)
        p.evs.e_need_kwh = p.evs.e_need_kwh * rng.uniform(0.5, 1.5, p.evs.n)
        p.tcls[0].p_max_kw = p.tcls[0].p_max_kw + rng.uniform(0, 5)
        p.tcls[0].e0_kwh = float(rng.uniform(10, 50))
        p.flex.owed_kwh = rng.uniform(0, 2, p.flex.n)
        p.peak_limit_kw = float(rng.uniform(30, 60)) if k % 2 else None
        p.export_limit_kw = float(rng.uniform(5, 20)) if k % 3 else None
        red = np.full(p.n_steps, np.nan)
        red[10 + k:13 + k] = 5.0 + k
        p.dr_reduction_kw, p.dr_baseline_kw = red, p.net_load_forecast_kw + 3.0
        p.reserve_steps = (np.arange(p.n_steps) >= 16) & (np.arange(p.n_steps) < 18 + k % 2) if k % 2 else None
        if grid:
            p.grid = GridSensitivity(np.array([1, 2]), np.array([[-2e-4, -1e-4], [-1e-4, -3e-4]]),
                                     1.03 + 0.01 * rng.random((2, p.n_steps)),
                                     dload_dp_pct_per_kw=np.array([[0.2, 0.1]]),
                                     loading0_pct=np.full((1, p.n_steps), 60.0 + k))
        out.append(p)
    return out


@pytest.mark.parametrize("grid", [False, True])
def test_bulk_update_writes_what_appsi_update_would(grid):
    """The re-solve path pushes a problem's numbers into HiGHS as whole arrays (model.Columns);
    the reference path writes Pyomo Params/bounds and lets appsi's update() push them. Over a
    sequence of problems of one structure, HiGHS must hold the same LP element for element and
    return the same schedules."""
    import controller.dispatch.model as lp

    seq = _sequence(grid=grid)
    bulk = Dispatcher()
    got = [bulk.realtime(p) for p in seq]
    assert bulk._slots["realtime"][4], "Columns.matches refused the model: bulk path unused"
    lp_bulk = bulk._slots["realtime"][2]._solver_model.getLp()
    ref = Dispatcher(bulk_update=False)
    want = [ref.realtime(p) for p in seq]
    assert not ref._slots["realtime"][4]
    assert all(s.stats.reused_model for s in got[1:]) and all(s.stats.reused_model for s in want[1:])
    lp_ref = ref._slots["realtime"][2]._solver_model.getLp()
    for f in ("col_lower_", "col_upper_", "row_lower_", "row_upper_", "col_cost_"):
        assert np.array_equal(getattr(lp_bulk, f), getattr(lp_ref, f)), f
    for g, w in zip(got, want):
        assert g.objective_terms == w.objective_terms
        assert g.p_kw.keys() == w.p_kw.keys()
        assert all(np.array_equal(g.p_kw[k], w.p_kw[k]) for k in g.p_kw)
        assert g.setpoints == w.setpoints


def test_disaggregation_keeps_device_limits_and_group_totals():
    """Group plans split per device: every battery inside its power and SOC limits, a group's
    devices together deliver the group's power whenever the group can (else as much as its
    devices can, all the same direction); EVs never above their rate or their need and, below
    the group's free rate, exactly the group's power."""
    from controller.dispatch import aggregate as agg

    rng = np.random.default_rng(3)
    for seed in range(25):
        p = random_problem(n_bat=int(rng.integers(1, 40)), n_pv=0, n_ev=int(rng.integers(1, 30)),
                           n_flex=0, n_steps=24, n_buses=int(rng.integers(1, 4)), seed=seed)
        b, e, dt_h = p.batteries, p.evs, p.step_h
        a = agg.aggregate(p)
        p_g = rng.uniform(-1.2, 1.2, (len(a.bat.keys), p.n_steps)) * a.bat.p_max[:, None]
        p_g[rng.random(p_g.shape) < 0.2] = 0.0
        p_dev, soc_dev, _ = agg.disaggregate_batteries(p, a.bat, p_g)
        soc = np.asarray(b.soc_kwh, float).copy()
        for k in range(p.n_steps):
            pk = p_dev[:, k]
            assert np.all(np.abs(pk) <= b.p_max_kw + 1e-9)
            for gi, m in enumerate(a.bat.members):
                # what the group's devices can charge / discharge this step from their SOC
                up = np.minimum(b.p_max_kw[m], (b.soc_max_kwh[m] - soc[m]) / b.eta_ch[m] / dt_h).sum()
                down = np.minimum(b.p_max_kw[m], (soc[m] - b.soc_min_kwh[m]) * b.eta_dis[m] / dt_h).sum()
                assert pk[m].sum() == pytest.approx(np.clip(p_g[gi, k], -down, up), abs=1e-9)
                assert np.all(pk[m] * np.sign(p_g[gi, k]) >= -1e-12)
            soc += np.where(pk > 0, pk * b.eta_ch, pk / b.eta_dis) * dt_h
            assert np.all(soc >= b.soc_min_kwh - 1e-9) and np.all(soc <= b.soc_max_kwh + 1e-9)
            assert soc_dev[:, k] == pytest.approx(soc, abs=1e-9)

        # EVs: limits always; with every departure beyond the horizon nothing is required (no
        # end-of-horizon repair), so each step the cars' sum is the plan up to their free rate
        for late in (False, True):
            if late:
                e.departure_step = np.full(e.n, p.n_steps + 500)
                a = agg.aggregate(p)
            q_g = rng.uniform(0, 1.2, (len(a.ev.keys), p.n_steps)) * a.ev.p_max
            q_dev, _, _ = agg.disaggregate_evs(p, a.ev, q_g)
            conn, kwh = a.ev.dev_conn, e.eta * dt_h
            assert np.all(q_dev >= -1e-12) and np.all(q_dev <= e.p_max_kw[:, None] * conn + 1e-9)
            got = np.cumsum(q_dev * kwh[:, None], axis=1)
            assert np.all(got[:, -1] <= e.e_need_kwh + 1e-9)
            if late:
                before = e.e_need_kwh[:, None] - (got - q_dev * kwh[:, None])  # room at each step's start
                rate = np.where(conn, np.minimum(e.p_max_kw[:, None], before / kwh[:, None]), 0.0)
                for gi, m in enumerate(a.ev.members):
                    assert q_dev[m].sum(axis=0) == pytest.approx(np.minimum(q_g[gi], rate[m].sum(axis=0)), abs=1e-9)
