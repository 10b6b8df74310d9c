"""Allocation of a DR reduction: limits never exceeded, target met when headroom allows,
drop-outs made up by the others, closed-loop correction converging on a biased plant."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.dr.allocation import DeliveryLoop, Resource, allocate, headroom, release_commands

HOLD_H = 1.0


def plant_power(r: Resource, setpoint: float) -> float:
    """What the device draws after receiving the setpoint (an ideal device model)."""
    b = r.base()
    if r.kind == "battery":
        return setpoint
    if r.kind == "ev":
        return min(b, setpoint)
    if r.kind == "flex_load":
        return b - setpoint / 100.0 * r.flex_kw
    if r.kind == "tcl":
        return b - setpoint
    return b


def delivered(res, alloc) -> float:
    by = {r.device_id: r for r in res}
    return sum(by[c.device_id].base() - plant_power(by[c.device_id], c.value)
               for c in alloc.commands)


@st.composite
def resources(draw):
    out = []
    n = draw(st.integers(1, 25))
    for i in range(n):
        kind = draw(st.sampled_from(["battery", "ev", "flex_load", "tcl", "pv"]))
        avail = draw(st.booleans()) or draw(st.booleans())
        if kind == "battery":
            p_max = draw(st.floats(0.5, 50))
            e_cap = draw(st.floats(1, 200))
            soc_min = 0.1 * e_cap
            soc = draw(st.floats(soc_min, e_cap))
            base = draw(st.floats(-p_max, p_max))
            out.append(Resource(f"bat/{i}", kind, p_kw=base, base_kw=base, p_max_kw=p_max,
                                soc_kwh=soc, soc_min_kwh=soc_min, eta_dis=0.95,
                                available=avail))
        elif kind == "ev":
            p_max = draw(st.floats(3, 22))
            base = draw(st.floats(0, p_max))
            out.append(Resource(f"ev/{i}", kind, p_kw=base, p_max_kw=p_max, available=avail))
        elif kind == "flex_load":
            base = draw(st.floats(0, 100))
            share = draw(st.floats(0, 1))
            out.append(Resource(f"flex/{i}", kind, p_kw=base, flex_kw=base * share,
                                available=avail))
        elif kind == "tcl":
            out.append(Resource(f"tcl{i}/*", kind, p_kw=200, headroom_kw=draw(st.floats(0, 80)),
                                available=avail))
        else:
            out.append(Resource(f"pv/{i}", kind, p_kw=-draw(st.floats(0, 10)), available=avail))
    return out


@settings(max_examples=150, deadline=None)
@given(res=resources(), target=st.floats(0, 800), method=st.sampled_from(["proportional", "merit"]))
def test_allocation_respects_every_limit_and_meets_target(res, target, method):
    for r in res:
        r.cost = (hash(r.device_id) % 7) * 0.01
    a = allocate(res, target, hold_h=HOLD_H, method=method)
    by = {r.device_id: r for r in res}
    assert all(by[d].available and by[d].kind != "pv" for d in a.device_ids)
    assert np.all(a.cut_kw >= -1e-12) and np.all(a.cut_kw <= a.headroom_kw + 1e-9)
    total = sum(headroom(r, HOLD_H) for r in res if r.available and r.kind != "pv")
    assert a.allocated_kw == pytest.approx(min(target, total), abs=1e-6)
    for c in a.commands:
        r = by[c.device_id]
        if r.kind == "battery":
            assert -r.p_max_kw - 1e-9 <= c.value <= r.p_max_kw + 1e-9
            e_avail = (r.soc_kwh - r.soc_min_kwh) * r.eta_dis
            # DR never pushes the discharge below what the stored energy holds for HOLD_H
            # (a base schedule already below it is left as it is)
            assert c.value >= min(r.base(), -e_avail / HOLD_H) - 1e-9
        elif r.kind == "ev":
            assert 0.0 <= c.value <= r.p_max_kw + 1e-9
        elif r.kind == "flex_load":
            assert 0.0 <= c.value <= 100.0
    # the setpoints, applied to ideal devices, deliver exactly what was allocated
    assert delivered(res, a) == pytest.approx(a.allocated_kw, abs=1e-6)


def fleet():
    res = [Resource(f"bat/{i}", "battery", p_kw=0.0, p_max_kw=5.0, soc_kwh=10.0, soc_min_kwh=1.0)
           for i in range(6)]
    res += [Resource(f"ev/{i}", "ev", p_kw=7.0, p_max_kw=7.4) for i in range(4)]
    res += [Resource(f"flex/{i}", "flex_load", p_kw=20.0, flex_kw=8.0) for i in range(2)]
    return res


def test_dropout_mid_event_is_made_up_by_the_others():
    res = fleet()  # headroom: 6*5 + 4*7 + 2*8 = 74 kW
    a = allocate(res, 50.0)
    assert a.total_headroom_kw == pytest.approx(74.0)
    assert delivered(res, a) == pytest.approx(50.0)
    before = dict(zip(a.device_ids, a.cut_kw))
    for r in res[:2] + res[6:7]:  # two batteries and an EV stop answering
        r.available = False
    b = allocate(res, 50.0)
    assert len(b.commands) == len(res) - 3
    assert b.total_headroom_kw == pytest.approx(74.0 - 10.0 - 7.0)
    assert delivered(res, b) == pytest.approx(50.0)
    assert all(cut > before[d] for d, cut in zip(b.device_ids, b.cut_kw))
    # the share the dropped devices held, for DeliveryLoop.update(lost_kw=...)
    assert a.lost_kw(b.device_ids) == pytest.approx(before["bat/0"] + before["bat/1"]
                                                    + before["ev/0"])
    loop = DeliveryLoop()
    loop.update(50.0, 50.0 - a.lost_kw(b.device_ids), lost_kw=a.lost_kw(b.device_ids))
    assert loop.correction_kw == pytest.approx(0.0, abs=1e-9)  # a drop-out is no plant error


def test_shortfall_reported_when_headroom_is_short_and_merit_order_uses_cheap_first():
    res = fleet()
    a = allocate(res, 100.0)
    assert a.allocated_kw == pytest.approx(74.0) and a.shortfall_kw == pytest.approx(26.0)
    for r in res:
        r.cost = {"battery": 0.10, "ev": 0.02, "flex_load": 0.05}[r.kind]
    m = allocate(res, 30.0, method="merit")
    cut = dict(zip(m.device_ids, m.cut_kw))
    assert sum(cut[f"ev/{i}"] for i in range(4)) == pytest.approx(28.0)  # all EV first
    assert sum(cut[f"flex/{i}"] for i in range(2)) == pytest.approx(2.0)
    assert sum(cut[f"bat/{i}"] for i in range(6)) == 0.0


def test_battery_energy_limits_its_headroom():
    r = Resource("bat/0", "battery", p_kw=1.0, base_kw=1.0, p_max_kw=5.0, soc_kwh=3.0,
                 soc_min_kwh=1.0, eta_dis=0.9)
    # 1.8 kWh usable over 2 h -> 0.9 kW discharge; from +1 kW charging that is 1.9 kW
    assert headroom(r, hold_h=2.0) == pytest.approx(1.9)
    assert headroom(r, hold_h=0.1) == pytest.approx(6.0)  # power-limited


def test_release_hands_devices_back():
    res = fleet() + [Resource("pv/0", "pv", p_kw=-3.0)]
    cmds = {c.device_id: (c.setpoint, c.value) for c in release_commands(res)}
    assert cmds["bat/0"] == ("p_set_kw", 0.0) and cmds["ev/0"] == ("p_max_set_kw", 7.4)
    assert cmds["flex/1"] == ("curtail_pct", 0.0) and "pv/0" not in cmds


def biased_plant(res, alloc, rng):
    """Devices deliver 80 % of what they are told, minus a 3 kW drift, plus meter noise."""
    return 0.8 * delivered(res, alloc) - 3.0 + rng.normal(0.0, 0.2)


def test_closed_loop_correction_converges_within_5_percent():
    rng = np.random.default_rng(1)
    res = fleet()
    req = 40.0
    open_loop = biased_plant(res, allocate(res, req), rng)
    assert abs(open_loop - req) / req > 0.15  # without correction the plant misses by ~27 %
    loop = DeliveryLoop(ki=0.6)
    target, hist = req, []
    for _ in range(15):
        a = allocate(res, target)
        got = biased_plant(res, a, rng)
        hist.append(got)
        target = loop.update(req, got, headroom_kw=a.total_headroom_kw)
    assert all(abs(h - req) / req < 0.05 for h in hist[6:])
    assert target == pytest.approx((req + 3.0) / 0.8, rel=0.03)


def test_closed_loop_correction_is_bounded_when_the_fleet_cannot_deliver():
    loop = DeliveryLoop(ki=0.6, max_correction_pct=50.0)
    for _ in range(50):
        t = loop.update(40.0, 10.0, headroom_kw=74.0)
    assert t == pytest.approx(60.0)  # +50 % cap, no wind-up beyond it
    assert loop.update(40.0, float("nan")) == pytest.approx(60.0)  # no data: hold
