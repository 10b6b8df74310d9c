"""Emergency shed: command order, margin and hold times against hand calculations."""

import math

import numpy as np
import pytest
from groups import group

from controller.emergency import EmergencyDetector, TclGroup, drift_time_s, plan_emergency

T = 1_780_000_000.0
TAU = 4 * 3600.0


def fleet():
    res = [
        # bat/0 charging at 2 kW; 7 kWh above min at 90 %: 6.3 kWh / 5 kW = 1.26 h = 4536 s;
        # bat/1 does not answer
        group("bat", "battery", 2, available=[True, False], p_kw=[2.0, 0.0], soc_kwh=[8.0, 5.0],
              r_p_max_kw=[5.0, 5.0], r_soc_min_kwh=[1.0, 0.0], r_eta_dis=[0.9, 0.95]),
        # needs 11.1 kWh at 7.4 kW = 1.5 h before departure in 3 h: may pause 5400 s
        group("ev", "ev", 1, p_kw=[7.0], departure_t=[T + 3 * 3600], e_need_kwh=[11.1],
              r_p_max_kw=[7.4]),
        group("flex", "flex_load", 1, p_kw=[50.0], p_base_kw=[50.0], r_flex_share=[0.4],
              r_max_curtail_s=[1800.0]),
        group("pv", "pv", 1, p_kw=[-4.0]),
    ]
    tcl = TclGroup("ac", p_kw=np.array([4.0, 5.0, 0.0]), on=np.array([True, True, False]),
                   t_c=np.array([22.0, 23.0, 22.0]), t_limit_c=np.full(3, 24.0),
                   t_eq_c=np.full(3, 32.0), tau_s=np.full(3, TAU),
                   lock_remaining_s=np.array([0.0, 90.0, 0.0]))
    return res, [tcl]


H_BAT, H_EV, H_FLEX = 4536.0, 5400.0, 1800.0
H_TCL0, H_TCL1 = TAU * math.log(10 / 8), TAU * math.log(9 / 8)  # 3213.3 s, 1696.1 s


def test_full_shed_order_margin_and_hold():
    res, tcl = fleet()
    p = plan_emergency(res, T, tcl, reason="under_frequency")
    assert [it.kind for it in p.items] == ["battery", "ev", "flex_load", "tcl"]
    assert p.margin_kw == pytest.approx(7 + 7 + 20 + 9) and p.shed_kw == pytest.approx(43.0)
    holds = {it.device_id: it.hold_s for it in p.items}
    assert holds["bat/0"] == pytest.approx(H_BAT) and holds["ev/0"] == pytest.approx(H_EV)
    assert holds["flex/0"] == pytest.approx(H_FLEX) and holds["ac/*"] == pytest.approx(H_TCL1)
    assert p.hold_s == pytest.approx(H_TCL1)  # the whole 43 kW holds until the first TCL warms up
    assert p.response_s == pytest.approx(60.0 + 90.0)  # TCL comms + remaining lockout
    assert p.margin_at(2000.0) == pytest.approx(7 + 7 + 4)
    assert p.margin_at(5000.0) == pytest.approx(7.0) and p.margin_at(6000.0) == 0.0
    cmds = [(c.device_id, c.setpoint, c.value) for c in p.commands]
    assert cmds == [("bat/0", "p_set_kw", -5.0), ("ev/0", "p_max_set_kw", 0.0),
                    ("flex/0", "curtail_pct", 100.0), ("ac/0", "force", -1.0),
                    ("ac/1", "force", -1.0)]
    assert all(c.source == "emergency" for c in p.commands)


@pytest.mark.parametrize("shed, taken, hold", [
    (10.0, 2, H_BAT),  # battery + EV = 14 kW; 10 kW needs both, the battery runs out first
    (30.0, 3, H_FLEX),  # 34 kW taken; 30 kW needs the flex load -> 1800 s
    (40.0, 4, H_TCL1),
])
def test_partial_shed_takes_fastest_first(shed, taken, hold):
    res, tcl = fleet()
    p = plan_emergency(res, T, tcl, shed_kw=shed)
    assert len(p.items) == taken and p.shed_kw >= shed
    assert p.margin_kw == pytest.approx(43.0)  # total margin reported even if not all used
    assert p.hold_s == pytest.approx(hold)


def test_restore_plan_is_staged():
    res, tcl = fleet()
    p = plan_emergency(res, T, tcl, restore_cohorts=2, restore_spread_s=600.0)
    steps = [(s.delay_s, [(c.device_id, c.value) for c in s.commands]) for s in p.restore]
    assert steps[0] == (0.0, [("flex/0", 0.0)])
    assert (0.0, [("ac/0", 0.0)]) in steps and (300.0, [("ac/1", 0.0)]) in steps
    assert (600.0, [("ev/0", 7.4)]) in steps and (600.0, [("bat/0", 0.0)]) in steps


def test_drift_time_cooling_heating_and_edges():
    assert drift_time_s(22.0, 32.0, 24.0, TAU) == pytest.approx(H_TCL0)
    assert drift_time_s(20.0, 0.0, 18.0, TAU, mode=-1) == pytest.approx(TAU * math.log(20 / 18))
    assert drift_time_s(25.0, 32.0, 24.0, TAU) == 0.0  # already past the limit
    assert math.isinf(float(drift_time_s(22.0, 18.0, 24.0, TAU)))  # cool outside: never


def test_empty_battery_only_stops_charging():
    r = group("bat", "battery", 1, p_kw=[3.0], soc_kwh=[1.0], r_p_max_kw=[5.0], r_soc_min_kwh=[1.0])
    p = plan_emergency([r], T)
    assert p.margin_kw == pytest.approx(3.0) and math.isinf(p.hold_s)
    assert p.commands[0].value == 0.0


def test_detector_pickup_once_and_rearm():
    d = EmergencyDetector(f_min_hz=49.8, v_min_pu=0.92, pickup_s=0.5, reset_s=10.0)
    assert d.check(0.0, f_hz=49.7) is None
    assert d.check(0.3, f_hz=49.7) is None
    assert d.check(0.6, f_hz=49.7) == "under_frequency"
    assert d.check(1.0, f_hz=49.6) is None  # fires once
    assert d.check(2.0, f_hz=50.0) is None and d.check(11.0, f_hz=50.0) is None
    assert d.check(12.5, f_hz=50.0) is None  # re-armed after 10 s normal
    assert d.check(13.0, v_pu=0.85) is None and d.check(13.6, v_pu=0.85) == "under_voltage"
    assert d.check(20.0, f_hz=float("nan"), v_pu=None) is None
