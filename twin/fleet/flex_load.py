"""Flexible loads (pumps, process loads): a profile-shaped demand with a curtailable share."""

from __future__ import annotations

import numpy as np
from numba import njit

from twin.fleet.base import Ambient, Ambients, Fleet, integrate_steps
from twin.params import draw_all
from twin.profiles import load_shape, load_shapes

DEFAULTS = {"p_nom_kw": 5.0, "flex_share": 0.5, "rebound": 0.5}
BOUNDS = {"p_nom_kw": (0.0, 1e5), "flex_share": (0.0, 1.0), "rebound": (0.0, 2.0)}


@njit(cache=True)
def flex_steps(p_nom_kw, flex_share, rebound, curtail_pct, available, owed_kwh, shapes, dt_h, p_out):
    """k device steps of `FlexLoadFleet.step` (same element-wise arithmetic): owed_kwh updated
    in place, p_out[j] = the fleet's p_kw after step j."""
    n = p_nom_kw.shape[0]
    for j in range(shapes.shape[0]):
        sh = shapes[j]
        for i in range(n):
            base = p_nom_kw[i] * sh
            cut = base * flex_share[i] * curtail_pct[i] / 100.0
            pay = 0.0
            if curtail_pct[i] <= 0.0:
                pay = min(owed_kwh[i] / dt_h, 0.3 * p_nom_kw[i])
            owed_kwh[i] += (cut * rebound[i] - pay) * dt_h
            p_out[j, i] = base - cut + pay if available[i] else base


class FlexLoadFleet(Fleet):
    """Setpoint: `curtail_pct` of the flexible share (0..100). Curtailed energy is owed back
    as a rebound (`rebound` x energy) once curtailment ends, as real process loads do."""

    KIND = "flex_load"
    SETPOINTS = {"curtail_pct": (0.0, 100.0)}

    def __init__(self, group, bus, rng, profile: str):
        super().__init__(group.name, bus)
        p = draw_all(group, DEFAULTS, rng, BOUNDS)
        self.p_nom_kw, self.flex_share, self.rebound = p["p_nom_kw"], p["flex_share"], p["rebound"]
        self.curtail_pct = np.zeros(self.n)
        self.owed_kwh = np.zeros(self.n)
        self.p_base_kw = np.zeros(self.n)
        self.profile = profile

    def step(self, dt_s: float, amb: Ambient) -> None:
        self.p_base_kw = self.p_nom_kw * load_shape(self.profile, amb.hour_of_day)
        cut = self.p_base_kw * self.flex_share * self.curtail_pct / 100.0
        dt_h = dt_s / 3600.0
        payback = np.where(self.curtail_pct <= 0.0,
                           np.minimum(self.owed_kwh / dt_h, 0.3 * self.p_nom_kw), 0.0)
        self.owed_kwh += (cut * self.rebound - payback) * dt_h
        self.p_kw = np.where(self.available, self.p_base_kw - cut + payback, self.p_base_kw)

    def advance(self, dt_s: float, ambs: Ambients) -> None:
        """k steps + integrations in one numba call; state as after k `step` + `integrate`."""
        k = len(ambs)
        if k == 0:
            return
        shapes = load_shapes(self.profile, ambs.hour_of_day)
        p = np.empty((k, self.n))
        flex_steps(self.p_nom_kw, self.flex_share, self.rebound, self.curtail_pct, self.available,
                   self.owed_kwh, shapes, dt_s / 3600.0, p)
        self.p_base_kw = self.p_nom_kw * shapes[-1]
        self.p_kw = p[-1].copy()
        self.energy_kwh = integrate_steps(self.energy_kwh, p.sum(axis=1), dt_s)

    def telemetry(self):
        return {"p_kw": self.p_kw, "p_base_kw": self.p_base_kw, "curtail_pct": self.curtail_pct}

    def aggregates(self):
        return {"p_kw": float(self.p_kw.sum()), "p_base_kw": float(self.p_base_kw.sum())}
