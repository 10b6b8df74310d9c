"""Flexible load: its flexible share (flex_share of the base demand p_base_kw) curtailed by
`curtail_pct`; released at 0 %. An emergency curtailment holds max_curtail_s where stated."""

from __future__ import annotations

import numpy as np

from controller.kinds.base import Kind, finite


class FlexLoad(Kind):
    name = "flex_load"
    ratings = ("p_nom_kw", "flex_share")
    ramp_frac_per_s = 0.1
    setpoints = ("curtail_pct",)
    dr_setpoint = "curtail_pct"
    rating_kw = "p_nom_kw"
    response_s = 30.0
    restore_rank = 0
    restore_late = False
    shed_order = 2

    def bounds(self, g, sp):
        return np.zeros(g.n), np.full(g.n, 100.0)

    def _base_share(self, g, cur):
        base = g.get("p_base_kw")
        return np.where(np.isfinite(base), base, cur), finite(g.rating("flex_share"), 1.0)

    def injection(self, g, sp, v, cur):
        base, share = self._base_share(g, cur)
        return base * (1.0 - share * np.asarray(v, float) / 100.0), base

    def setpoint_for(self, g, sp, inj, cur):
        base, share = self._base_share(g, cur)
        ok = (base > 0) & (share > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            pct = np.clip((1.0 - np.asarray(inj, float) / base) / share * 100.0, 0.0, 100.0)
        return np.where(ok, pct, 0.0)

    def baseline_kw(self, g, base_set=None, **_):
        """The base demand, less what the schedule already curtails (`base_set`: its curtail_pct)."""
        base = g.get("p_base_kw")
        if base_set is None:
            return base
        return base * (1.0 - finite(g.rating("flex_share"), 1.0) * np.nan_to_num(base_set) / 100.0)

    def headroom_kw(self, g, baseline, hold_h):
        """The flexible share still uncut below `baseline` (the whole share without a schedule)."""
        base = g.get("p_base_kw")
        rigid = base * (1.0 - finite(g.rating("flex_share"), 1.0))
        h = np.where(np.isfinite(base), baseline - rigid, baseline * g.rating("flex_share", 1.0))
        return np.where(g.usable() & np.isfinite(h), np.maximum(h, 0.0), 0.0)

    def setpoint_for_cut(self, g, baseline, cut_kw):
        """The curtail_pct that brings the load to baseline - cut."""
        base = g.get("p_base_kw")
        base = np.where(np.isfinite(base), base, np.nan_to_num(baseline))
        flex = base * finite(g.rating("flex_share"), 1.0)
        pct = np.divide(100.0 * (base - np.nan_to_num(baseline) + cut_kw), flex, out=np.zeros(g.n),
                        where=flex > 1e-9)
        return np.clip(pct, 0.0, 100.0)

    def released(self, g, base_set=None):
        """Back to the schedule's curtailment, else uncurtailed."""
        return np.zeros(g.n) if base_set is None else np.asarray(base_set, float)

    def shed(self, g, p_kw, t, default_hold_s):
        flex = np.nan_to_num(g.get("p_base_kw")) * finite(g.rating("flex_share", 1.0), 1.0)
        hold = finite(g.rating("max_curtail_s", default_hold_s), default_hold_s)
        return np.maximum(flex, 0.0), hold, np.full(g.n, 100.0)
