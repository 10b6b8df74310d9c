"""Export limit source (controller/sources/export_limit.py): caps PV on the metered head power,
corrects by the metered error, releases at 100 %, holds without a meter reading, and never
raises a lower cap the plan set."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from controller.historian import Historian
from controller.links.base import DeviceInfo
from controller.sources.export_limit import ExportLimitSource
from controller.state import FleetState, empty_group


def _state(head_kw, pv_kw, rated_kva=10.0):
    pv = empty_group("pv", [DeviceInfo(f"pv/{i}", "pv", "pv", 1, {"s_rated_kva": rated_kva})
                            for i in range(len(pv_kw))])
    pv.values["p_kw"], pv.quality["p_kw"] = np.asarray(pv_kw, float), np.zeros(len(pv_kw), np.int8)
    meter = empty_group("meter", [DeviceInfo("meter/0", "meter", "meter", 0, {})])
    good = np.isfinite([head_kw]).astype(np.int8) ^ 1  # 0 (good) when finite, 1 (stale) when not
    meter.values["p_kw"], meter.quality["p_kw"] = np.array([head_kw], float), good
    return FleetState(0.0, {"pv": pv, "meter": meter})


def _source(limit_kw=20.0, planned=None):
    ctl = SimpleNamespace(hist=Historian(":memory:", "NORMAL"),
                          schedule_src=SimpleNamespace(planned=lambda g, sp: planned))
    return ExportLimitSource(ctl, limit_kw, margin_kw=1.0)


def test_caps_corrects_releases_and_holds_without_the_meter():
    src = _source()
    assert src.commands(0.0, _state(-15.0, [-8.0] * 4)) == []  # within the limit: nothing
    # 29 kW export, limit 20 (target 19): 10 kW of the 32 kW PV off -> cap (32 - 10) / 40 rated
    cmds = src.commands(60.0, _state(-29.0, [-8.0] * 4))
    assert {c.setpoint for c in cmds} == {"p_limit_pct"} and len(cmds) == 4
    assert cmds[0].value == np.float64(100.0 * 22.0 / 40.0)
    # still 2 kW beyond the target: 2 kW more off
    cmds = src.commands(120.0, _state(-21.0, [-5.5] * 4))
    assert cmds[0].value == 100.0 * 20.0 / 40.0
    # no meter reading: the cap in force is held, not released
    assert [c.value for c in src.commands(180.0, _state(np.nan, [-5.0] * 4))] == [50.0] * 4
    # room again (a cloud, load up): the cap opens by the room, and at 100 % it is released once
    cmds = src.commands(240.0, _state(5.0, [-5.0] * 4))
    assert cmds[0].value == 100.0 and cmds[0].reason == "export limit released" and src.cap_pct is None
    assert src.commands(300.0, _state(5.0, [-5.0] * 4)) == []
    kinds = [r["kind"] for r in src.ctl.hist._rows("SELECT kind FROM events ORDER BY id")]
    assert kinds == ["export_limit_active", "export_limit_released"]


def test_a_lower_cap_from_the_plan_stands():
    src = _source(planned=np.array([10.0, 100.0, 30.0, 100.0]))
    cmds = src.commands(0.0, _state(-29.0, [-8.0] * 4))
    assert [c.value for c in cmds] == [10.0, 55.0, 30.0, 55.0]
