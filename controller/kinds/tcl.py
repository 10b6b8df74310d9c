"""Thermostatically controlled load (one unit per row): `force` -1 holds it off (its load
leaves the bus), +1 forces it on at p_rated_kw, 0 hands it back to its thermostat (no change
attributed). Kept whole or rejected, never scaled. DR and emergencies act on the group
through controller/tcl_dispatch.py (switching law, lockouts, comfort)."""

from __future__ import annotations

import numpy as np

from controller.kinds.base import Kind


class Tcl(Kind):
    name = "tcl"
    # what a smart thermostat / gateway can state about itself (no R, C or COP: the
    # controller identifies the thermal model from telemetry, controller.aggregation)
    ratings = ("p_rated_kw", "t_set_c", "deadband_c", "comfort_c", "min_on_s", "min_off_s", "mode")
    setpoints = ("force",)
    all_or_nothing = ("force",)
    dr_setpoint = "force"
    group_dispatch = True
    rating_kw = "p_rated_kw"
    response_s = 60.0
    restore_rank = 1
    shed_order = 3

    def bounds(self, g, sp):
        return np.full(g.n, -1.0), np.full(g.n, 1.0)

    def injection(self, g, sp, v, cur):
        v = np.round(np.asarray(v, float))
        p_rated = g.rating("p_rated_kw")
        p_rated = np.where(np.isfinite(p_rated), p_rated, cur)
        return np.where(v < 0, 0.0, np.where(v > 0, p_rated, cur)), np.asarray(cur, float)
