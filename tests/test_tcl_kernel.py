"""TCL physics: lockout, energy balance against the analytic duty cycle, numba == numpy,
synchronisation of identical populations, control inputs, parameter errors."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from scenarios.model import FleetGroup
from twin.fleet.base import Ambient, SetpointError
from twin.fleet.tcl import TclFleet
from twin.params import ParamError
from twin.tcl_kernel import KernelChoice, advance_first_order, advance_first_order_serial, advance_numpy


def fleet(n, seed=0, t_out=34.0, **params):
    g = FleetGroup(name="ac", kind="tcl", count=n, params=params)
    return TclFleet(g, np.zeros(n, dtype=np.int64), np.random.default_rng(seed), None, t_out0_c=t_out)


def amb(t_out):
    return Ambient(0.0, 0.0, t_out, 15.0)


def run(f, n_steps, dt_s=2.0, t_out=34.0, record=False):
    p, on = [], []
    for _ in range(n_steps):
        f.step(dt_s, amb(t_out))
        p.append(f.p_kw.sum())
        if record:
            on.append(f.on.copy())
    return np.array(p), (np.array(on) if record else None)


def lockout_breaks(on_hist, on0, since0_s, min_on, min_off, dt_s):
    """Independent count, from on/off trajectories alone, of switches made too early."""
    n_steps = on_hist.shape[0]
    prev = on0.astype(bool).copy()
    since = since0_s.copy()
    breaks = 0
    for k in range(n_steps):
        cur = on_hist[k].astype(bool)
        sw = cur != prev
        need = np.where(prev, min_on, min_off)
        breaks += int(np.sum(sw & (since < need - 1e-9)))
        since = np.where(sw, 0.0, since) + dt_s
        prev = cur
    return breaks


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cmds=st.lists(st.tuples(st.sampled_from(["force", "t_offset_c", "frac_on_pct", "frac_off_pct"]),
                               st.integers(0, 15), st.floats(-1, 1)), min_size=1, max_size=40),
       seed=st.integers(0, 1000))
def test_lockout_is_never_violated_under_random_commands(cmds, seed):
    f = fleet(16, seed=seed)
    on0, since0 = f.on.copy(), f.since_switch_s.copy()
    hist = []
    for name, i, x in cmds:
        if name == "force":
            f.write("force", i, round(x))
        elif name == "t_offset_c":
            f.write("t_offset_c", i, 5.0 * x)
        else:
            f.write(name, slice(None), 100.0 * abs(x))
        for _ in range(5):
            f.step(2.0, amb(34.0))
            hist.append(f.on.copy())
    assert lockout_breaks(np.array(hist), on0, since0, f.min_on_s, f.min_off_s, 2.0) == 0
    assert f.kpis()["lockout_violations"] == 0


def test_override_breaks_lockout_and_the_counter_sees_every_break():
    f = fleet(50, seed=4)
    on0, since0 = f.on.copy(), f.since_switch_s.copy()
    hist = []
    f.write("override", slice(None), 1)
    for k in range(60):
        f.write("force", slice(None), 1 if (k // 3) % 2 == 0 else -1)  # flip every 6 s
        f.step(2.0, amb(34.0))
        hist.append(f.on.copy())
    breaks = lockout_breaks(np.array(hist), on0, since0, f.min_on_s, f.min_off_s, 2.0)
    assert breaks > 100
    assert f.kpis()["lockout_violations"] == breaks


def whole_cycles(on_hist, x_hist):
    """Per device: mean of x over whole thermostat cycles (first to last off->on switch)."""
    starts = (on_hist[1:] == 1) & (on_hist[:-1] == 0)
    out = np.empty(on_hist.shape[1])
    for i in range(on_hist.shape[1]):
        k = np.flatnonzero(starts[:, i]) + 1
        assert k.size >= 6, "need several whole cycles"
        out[i] = x_hist[k[0]:k[-1], i].mean()
    return out


@pytest.mark.parametrize("mode,t_out", [(1.0, 34.0), (1.0, 30.0), (-1.0, 8.0)])
def test_steady_state_duty_cycle_matches_analytic(mode, t_out):
    """Energy balance: heat through the envelope = heat moved by the unit, on average."""
    f = fleet(20, seed=1, t_out=t_out, mode=mode, min_on_s=0.0, min_off_s=0.0,
              t_set_c=21.0 if mode < 0 else {"dist": "uniform", "low": 21, "high": 24})
    dt = 2.0
    run(f, 1800, dt_s=dt, t_out=t_out)  # settle
    on_h, t_h = [], []
    for _ in range(4 * 1800):
        f.step(dt, amb(t_out))
        on_h.append(f.on.copy())
        t_h.append(f.t_in_c.copy())
    on_h, t_h = np.array(on_h), np.array(t_h)
    duty = whole_cycles(on_h, on_h.astype(float))
    analytic = mode * (t_out - f.t_set_c) / (f.r_c_per_kw * f.p_rated_kw * f.cop)
    balance = mode * (t_out - whole_cycles(on_h, t_h)) / f.gain_c
    assert np.all((analytic > 0.2) & (analytic < 0.8))
    np.testing.assert_allclose(duty, analytic, rtol=0.01)
    np.testing.assert_allclose(duty, balance, rtol=0.002)


def test_second_order_model_keeps_the_energy_balance():
    f = fleet(10, seed=2, order=2, min_on_s=0.0, min_off_s=0.0)
    run(f, 1800, dt_s=2.0)
    on_h, t_h = [], []
    for _ in range(2 * 1800):
        f.step(2.0, amb(34.0))
        on_h.append(f.on.copy())
        t_h.append(f.t_in_c.copy())
    on_h, t_h = np.array(on_h), np.array(t_h)
    # at periodic steady state no net heat goes into the mass: envelope heat = heat removed
    balance = (34.0 - whole_cycles(on_h, t_h)) / f.gain_c
    np.testing.assert_allclose(whole_cycles(on_h, on_h.astype(float)), balance, rtol=0.01)


def test_numba_kernel_equals_plain_numpy():
    rng = np.random.default_rng(5)
    n, steps, dt = 500, 400, 2.0
    f = fleet(n, seed=5)
    f._coefficients(dt)
    f.t_offset_c[:] = rng.uniform(-1, 1, n)
    f.force[:] = rng.integers(-1, 2, n)
    f.force[: n // 2] = 0
    f.override[::7] = True
    t_out = 30.0 + 4.0 * np.sin(np.arange(steps) / 50.0)
    args_a = [x.copy() for x in (f.t_in_c, f.on, f.since_switch_s, f.switches, f.comfort_dm,
                                 f.lockout_violations)]
    args_b = [x.copy() for x in args_a]
    params = (f.decay, f.gain_c, f.p_rated_kw, f.mode, f.t_set_c, f.half_db_c, f.comfort_c,
              f.min_on_s, f.min_off_s, f.t_offset_c, f.force, f.override)
    agg_a, agg_b = np.zeros(steps), np.zeros(steps)
    advance_first_order(*args_a, *params, np.zeros(n), np.zeros(n), np.ones(n, bool),
                        t_out, dt, 1, 0, 8, agg_a)
    advance_numpy(*args_b, *params, t_out, dt, agg_b)
    args_c = [x.copy() for x in (f.t_in_c, f.on, f.since_switch_s, f.switches, f.comfort_dm,
                                 f.lockout_violations)]
    agg_c = np.zeros(steps)
    advance_first_order_serial(*args_c, *params, np.zeros(n), np.zeros(n), np.ones(n, bool),
                               t_out, dt, 1, 0, 8, agg_c)
    for x, y in zip(args_a, args_c):
        assert np.array_equal(x, y)  # one thread or many: bit-identical
    assert np.array_equal(agg_a, agg_c)  # the same blocks summed in the same order
    assert np.array_equal(args_a[1], args_b[1].astype(args_a[1].dtype))
    np.testing.assert_allclose(args_a[0], args_b[0], rtol=0, atol=1e-9)
    assert np.array_equal(args_a[3], args_b[3])
    assert np.array_equal(args_a[5], args_b[5]) and args_a[5].sum() > 0  # the overrides broke some
    np.testing.assert_allclose(agg_a, agg_b, rtol=1e-12)
    np.testing.assert_allclose(args_a[4], args_b[4], rtol=1e-9, atol=1e-9)


def test_identical_population_stays_synchronised_while_diverse_one_decorrelates():
    n = 400
    same = fleet(n, seed=0, r_c_per_kw=2.0, c_kwh_per_c=2.0, p_rated_kw=4.0, cop=3.0, t_set_c=22.0,
                 deadband_c=0.5, min_on_s=180.0, min_off_s=180.0)
    same.t_in_c[:] = 22.0
    same.on[:] = 1
    same.since_switch_s[:] = 0.0
    diverse = fleet(5 * n, seed=0)
    for f in (same, diverse):  # a direct-load-control event synchronises both: all off 20 min
        f.write("force", slice(None), -1)
        run(f, 600)
        f.write("force", slice(None), 0)
    p_same, on_same = run(same, 4 * 1800, record=True)
    p_div, on_div = run(diverse, 4 * 1800, record=True)
    last = slice(3 * 1800, None)  # the fourth hour after release
    frac_same = on_same[last].mean(axis=1)
    assert np.all((frac_same == 0.0) | (frac_same == 1.0))  # every device in lockstep
    assert p_same[last].max() == pytest.approx(4.0 * n) and p_same[last].min() == 0.0
    assert p_div[:600].max() > 1.3 * p_div[last].mean()  # the rebound right after release
    first = slice(0, 1800)
    assert p_div[last].std() < 0.3 * p_div[first].std()  # ... decays: the oscillation dies out
    assert p_div[last].std() / p_div[last].mean() < 0.05
    frac_div = on_div[last].mean(axis=1)  # share on: a steady mix, never all-or-nothing
    assert 0.3 < frac_div.min() and frac_div.max() < 0.7


def test_setpoint_offset_lowers_the_duty_cycle_as_the_model_says():
    f = fleet(200, seed=3, min_on_s=0.0, min_off_s=0.0)
    f.write("t_offset_c", slice(None), 2.0)
    run(f, 1800, dt_s=2.0)
    _, on = run(f, 3600, dt_s=2.0, record=True)
    analytic = (34.0 - f.t_set_c - 2.0) / f.gain_c
    assert on.mean() == pytest.approx(analytic.mean(), rel=0.02)


def test_fraction_command_switches_that_share_of_eligible_devices_once():
    f = fleet(20000, seed=6, min_on_s=0.0, min_off_s=0.0)
    run(f, 300)
    f.since_switch_s[:] = 1e4
    dev = f.mode * (f.t_in_c - f.t_set_c)
    inside = np.abs(dev) < f.half_db_c - 0.01
    eligible = inside & (f.on == 1)
    f.write("frac_off_pct", slice(None), 30.0)
    f.step(2.0, amb(34.0))
    switched = eligible & (f.on == 0)
    share = switched.sum() / eligible.sum()
    assert share == pytest.approx(0.30, abs=0.02)
    assert np.all(f.frac_off_pct == 0.0)  # one-shot


def test_bad_setpoints_and_params_are_rejected_with_one_line_errors():
    f = fleet(4)
    with pytest.raises(SetpointError, match=r"ac.force=0.5: must be an integer"):
        f.write("force", 0, 0.5)
    with pytest.raises(SetpointError, match=r"ac\[1\].force=2 outside"):
        f.write("force", 1, 2)
    with pytest.raises(SetpointError, match=r"t_offset_c=9 outside \[-5, 5\]"):
        f.write("t_offset_c", 2, 9.0)
    with pytest.raises(ParamError, match=r"unknown params \['r_ohm'\]"):
        fleet(4, r_ohm=1.0)
    with pytest.raises(ParamError, match=r"params.mode: value 0 not allowed"):
        fleet(4, mode=0.0)
    with pytest.raises(ParamError, match=r"params.cop: value 20 outside"):
        fleet(4, cop=20.0)


def test_unavailable_devices_draw_nothing_and_restart_after_their_lockout():
    f = fleet(100, seed=8)
    f.on[:] = 1
    f.since_switch_s[:] = 1e4
    f.available[:50] = False
    f.step(2.0, amb(34.0))
    assert np.all(f.p_kw[:50] == 0.0)
    f.available[:] = True
    _, on = run(f, 200, record=True)
    first_on = np.argmax(on[:, :50] == 1, axis=0)
    restarted = on[:, :50].any(axis=0)
    assert restarted.any()
    assert np.all((first_on[restarted] + 1) * 2.0 >= f.min_off_s[:50][restarted] - 2.0)
    assert f.kpis()["lockout_violations"] == 0


def test_kernel_choice_takes_the_faster_way_and_never_changes_the_numbers():
    c = KernelChoice(threads_from=100)
    assert not c.threaded(99)  # a small group stays on the calling thread
    c.ns = {False: 2.0, True: 1.0}
    ways = [c.threaded(1000) for _ in range(3 * KernelChoice.PROBE_EVERY)]
    assert sum(not w for w in ways) == 3  # the slower way is re-tried once per PROBE_EVERY calls
    c.ns = {False: 1.0, True: 2.0}
    assert sum(c.threaded(1000) for _ in range(KernelChoice.PROBE_EVERY)) == 1

    # a group whose calls alternate threads and the calling thread equals one that never uses threads
    a, b = fleet(3000, seed=4), fleet(3000, seed=4)
    a.kernel.threads_from = 1000
    b.kernel.threads_from = 10**9
    a.force[::5] = 1  # some forced units: the kernel's full path as well as the plain one
    b.force[::5] = 1
    for k in range(40):
        if k % 2:  # the measured times decide the way; force both ways in turn
            a.kernel.ns = {False: 1.0, True: 2.0} if k % 4 == 1 else {False: 2.0, True: 1.0}
        a.step(2.0, amb(34.0))
        b.step(2.0, amb(34.0))
    if numba.get_num_threads() > 1:  # both ways ran
        assert a.kernel.ns[True] is not None and a.kernel.ns[False] is not None
    for x, y in ((a.t_in_c, b.t_in_c), (a.on, b.on), (a.since_switch_s, b.since_switch_s),
                 (a.comfort_dm, b.comfort_dm), (a.switches, b.switches)):
        assert np.array_equal(x, y)
    assert a.energy_kwh == b.energy_kwh
