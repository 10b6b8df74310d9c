"""Volt/VAR: IEEE 1547 curves, optimal reactive dispatch bringing an over-voltage back into
band (confirmed by pandapower), the gate letting it through, and an OLTC step when Q runs out."""

import copy
import warnings

import numpy as np
import pandapower as pp
import pytest

from controller.safety import GridSnapshot, SafetyGate
from controller.voltvar import VoltVarCurve, optimal_reactive_dispatch, step_command, volt_var_commands
from grid_models.feeders import build_feeder
from scenarios.model import Limits

LIM = Limits()


@pytest.fixture(scope="module")
def mv():
    net = build_feeder("simbench", "1-MV-rural--0-sw")
    net.trafo["tap_changer_type"] = "Ratio"  # SimBench leaves it None: pandapower then ignores taps
    return net


def noon_snapshot(net, s_rated_kva=2000.0, p_kw=1400.0, q_max=None):
    """Light load, 31 large PV plants on MV load buses exporting: over-voltage near 1.09 pu."""
    pvb = np.array(sorted(set(net.load.bus))[::3])
    n = len(pvb)
    rat = {"s_rated_kva": np.full(n, s_rated_kva)}
    if q_max is not None:
        rat["q_max_kvar"] = np.full(n, q_max)
    g = {"name": "pv", "kind": "pv", "bus": pvb, "p_kw": np.full(n, -p_kw), "q_kvar": np.zeros(n), "ratings": rat,
             "telemetry": {"p_avail_kw": np.full(n, p_kw)}}
    return GridSnapshot.from_groups(0.0, 1.0, net.load.bus.to_numpy(), net.load.p_mw.to_numpy() * 300,
                                    net.load.q_mvar.to_numpy() * 300, [g])


def pandapower_check(net, snap, q_by_id):
    """Independent AC power flow: loads and PV as pandapower elements, fresh runpp."""
    net = copy.deepcopy(net)
    net.sgen.drop(net.sgen.index, inplace=True)
    net.load["p_mw"] *= 0.3
    net.load["q_mvar"] *= 0.3
    for r, dev in enumerate(snap.device_ids):
        q = q_by_id.get(dev, snap.q_kvar[r])
        pp.create_sgen(net, int(snap.bus[r]), p_mw=-snap.p_kw[r] / 1000, q_mvar=-q / 1000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pp.runpp(net)
    return net.res_bus.vm_pu.to_numpy()


def test_curve_points():
    c = VoltVarCurve()
    q = c.q_kvar([0.90, 0.92, 0.95, 1.0, 1.05, 1.08, 1.10], 10.0)
    assert q == pytest.approx([-4.4, -4.4, -2.2, 0.0, 2.2, 4.4, 4.4])  # + absorbs at high voltage


def test_optimal_dispatch_restores_band(mv):
    snap = noon_snapshot(mv)
    gate = SafetyGate(mv, LIM)
    v0 = pandapower_check(mv, snap, {})
    assert v0.max() > 1.08
    d = optimal_reactive_dispatch(gate, snap, LIM)
    assert d.in_band
    assert all(c.setpoint == "q_set_kvar" for c in d.commands)
    assert sum(c.value for c in d.commands) > 0  # net absorption pulls the voltage down
    v1 = pandapower_check(mv, snap, {c.device_id: c.value for c in d.commands})
    assert LIM.v_min_pu <= v1.min() and v1.max() <= LIM.v_max_pu + 1e-6
    assert np.max(np.abs(v1 - d.v_after_pu)) < 1e-6  # the gate's fast flow agrees with pandapower
    # minimal: not every inverter runs at its limit
    assert d.q_total_kvar < 0.9 * 0.44 * 2000 * snap.n
    # and the gate lets the batch through (same margins: nothing to cut)
    res = gate.check(d.commands, snap)
    assert not res.rejected and len(res.accepted) >= len(d.commands) - 1
    assert gate.last_report["v_max_pu"] <= LIM.v_max_pu


def test_local_curves_lower_the_peak(mv):
    snap = noon_snapshot(mv)
    gate = SafetyGate(mv, LIM)
    op = gate.operating_point(snap)
    v_bus = dict(zip(gate.pf.bus_index, op["res"].v_pu))
    q = {}
    for _ in range(6):  # each inverter follows its curve at its own terminal voltage
        cmds = volt_var_commands(snap, np.array([v_bus[int(b)] for b in snap.bus]))
        q = {c.device_id: c.value for c in cmds}
        v = pandapower_check(mv, snap, q)
        v_bus = dict(zip(mv.bus.index, v))
    assert max(v_bus.values()) < op["res"].v_pu.max() - 0.01


def test_tap_step_when_vars_run_out(mv):
    snap = noon_snapshot(mv, q_max=1.0)  # inverters with (almost) no reactive capability
    gate = SafetyGate(mv, LIM)
    d = optimal_reactive_dispatch(gate, snap, LIM)
    assert not d.in_band
    tap, expect = step_command(gate, d.p_kw, d.q_kvar, d.v_before_pu, LIM)
    assert tap is not None and expect["v_max_pu"] < d.v_before_pu.max() - 0.005  # an AC power flow says so
    assert tap.device_id in ("rtu/trafo0", "rtu/trafo1") and tap.setpoint == "tap_pos"
    t = mv.trafo.index[int(tap.device_id.removeprefix("rtu/trafo"))]
    net = copy.deepcopy(mv)
    v_before = pandapower_check(net, snap, {})
    net.trafo.at[t, "tap_pos"] = tap.value
    v_after = pandapower_check(net, snap, {})
    assert v_after.max() < v_before.max()  # the step goes the right way
