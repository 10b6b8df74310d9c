"""DR allocation as the cycle does it (controller.kinds): per-kind headroom, a proportional
split, the setpoint that delivers each cut. Limits never exceeded, the target met when the
headroom allows, drop-outs made up by the others, devices handed back on release."""

import numpy as np
import pytest
from groups import group
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.kinds import KINDS, allocate

HOLD_H = 1.0


def plant_power(g, base, value):
    """What ideal devices draw after receiving the setpoint values."""
    if g.kind == "battery":
        return value
    if g.kind == "ev":
        return np.minimum(base, value)
    return base - value / 100.0 * base * g.rating("flex_share", 1.0)  # flex_load


@st.composite
def fleets(draw):
    n = draw(st.integers(1, 12))
    avail = lambda: [draw(st.booleans()) or draw(st.booleans()) for _ in range(n)]
    p_max = [draw(st.floats(0.5, 50)) for _ in range(n)]
    e_cap = [draw(st.floats(1, 200)) for _ in range(n)]
    soc = [draw(st.floats(0.1 * e, e)) for e in e_cap]
    bat = group("bat", "battery", n, available=avail(), soc_kwh=soc, r_p_max_kw=p_max,
                r_soc_min_kwh=[0.1 * e for e in e_cap], r_eta_dis=[0.95] * n)
    bat_base = np.array([draw(st.floats(-p, p)) for p in p_max])
    ev_max = [draw(st.floats(3, 22)) for _ in range(n)]
    ev = group("ev", "ev", n, available=avail(), connected=[1.0] * n, e_need_kwh=[20.0] * n,
               r_p_max_kw=ev_max)
    flex = group("flex", "flex_load", n, available=avail(),
                 p_base_kw=[draw(st.floats(0, 100)) for _ in range(n)],
                 r_flex_share=[draw(st.floats(0, 1)) for _ in range(n)])
    return [(bat, bat_base), (ev, None), (flex, None)]


def plan(fleet, target):
    base = {g.group: KINDS[g.kind].baseline_kw(g, b) for g, b in fleet}
    head = {g.group: KINDS[g.kind].headroom_kw(g, base[g.group], HOLD_H) for g, _ in fleet}
    cut = allocate(target, head)
    vals = {g.group: KINDS[g.kind].setpoint_for_cut(g, base[g.group], cut[g.group]) for g, _ in fleet}
    return base, head, cut, vals


@settings(max_examples=150, deadline=None)
@given(fleet=fleets(), target=st.floats(0, 800))
def test_allocation_respects_every_limit_and_meets_target(fleet, target):
    base, head, cut, vals = plan(fleet, target)
    total = sum(h.sum() for h in head.values())
    assert sum(c.sum() for c in cut.values()) == pytest.approx(min(target, total), abs=1e-6)
    delivered = 0.0
    for g, _ in fleet:
        c, v, b = cut[g.group], vals[g.group], base[g.group]
        assert np.all(c >= -1e-12) and np.all(c <= head[g.group] + 1e-9)
        assert np.all(head[g.group][~g.usable()] == 0.0)  # unusable devices get nothing
        if g.kind == "battery":
            p_max = g.rating("p_max_kw")
            assert np.all(np.abs(v) <= p_max + 1e-9)
            e_avail = (g.get("soc_kwh") - g.rating("soc_min_kwh")) * 0.95
            # DR never pushes the discharge below what the stored energy holds for HOLD_H
            assert np.all(v >= np.minimum(b, -e_avail / HOLD_H) - 1e-9)
        elif g.kind == "ev":
            assert np.all((v >= 0.0) & (v <= g.rating("p_max_kw") + 1e-9))
        else:
            assert np.all((v >= 0.0) & (v <= 100.0))
        delivered += float((b - plant_power(g, b, v)).sum())
    # the setpoints, applied to ideal devices, deliver exactly what was allocated
    assert delivered == pytest.approx(sum(c.sum() for c in cut.values()), abs=1e-6)


def fleet():
    bat = group("bat", "battery", 6, soc_kwh=[10.0] * 6, r_p_max_kw=[5.0] * 6, r_soc_min_kwh=[1.0] * 6)
    ev = group("ev", "ev", 4, connected=[1.0] * 4, e_need_kwh=[20.0] * 4, r_p_max_kw=[7.0] * 4)
    flex = group("flex", "flex_load", 2, p_base_kw=[20.0] * 2, r_flex_share=[0.4] * 2)
    return [(bat, None), (ev, None), (flex, None)]


def test_dropout_is_made_up_by_the_others_and_shortfall_is_capped():
    f = fleet()  # headroom: 6*5 + 4*7 + 2*8 = 74 kW
    _, head, cut, _ = plan(f, 50.0)
    assert sum(h.sum() for h in head.values()) == pytest.approx(74.0)
    before = {g: c.copy() for g, c in cut.items()}
    f[0][0].available[:2] = False  # two batteries and an EV stop answering
    f[1][0].available[0] = False
    _, head, cut, _ = plan(f, 50.0)
    assert sum(h.sum() for h in head.values()) == pytest.approx(74.0 - 10.0 - 7.0)
    assert sum(c.sum() for c in cut.values()) == pytest.approx(50.0)
    assert np.all(cut["bat"][2:] > before["bat"][2:]) and cut["bat"][0] == 0.0
    _, _, cut, _ = plan(fleet(), 100.0)
    assert sum(c.sum() for c in cut.values()) == pytest.approx(74.0)


def test_battery_energy_limits_its_headroom():
    g = group("bat", "battery", 1, soc_kwh=[3.0], r_p_max_kw=[5.0], r_soc_min_kwh=[1.0], r_eta_dis=[0.9])
    k = KINDS["battery"]
    # 1.8 kWh usable over 2 h -> 0.9 kW discharge; from +1 kW charging that is 1.9 kW
    assert k.headroom_kw(g, np.array([1.0]), 2.0)[0] == pytest.approx(1.9)
    assert k.headroom_kw(g, np.array([1.0]), 0.1)[0] == pytest.approx(6.0)  # power-limited


def test_release_hands_devices_back():
    (bat, _), (ev, _), (flex, _) = fleet()
    assert KINDS["battery"].released(bat)[0] == 0.0
    assert KINDS["battery"].released(bat, np.full(6, 2.5))[0] == 2.5  # back to its schedule
    assert KINDS["ev"].released(ev)[0] == 7.0 and KINDS["flex_load"].released(flex)[1] == 0.0
    assert KINDS["pv"].dr_setpoint is None  # PV offers no load reduction
