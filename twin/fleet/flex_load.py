"""Flexible loads (pumps, process loads): a profile-shaped demand with a curtailable share."""

from __future__ import annotations

import numpy as np

from twin.fleet.base import Ambient, Fleet
from twin.params import draw_all
from twin.profiles import load_shape

DEFAULTS = {"p_nom_kw": 5.0, "flex_share": 0.5, "rebound": 0.5}
BOUNDS = {"p_nom_kw": (0.0, 1e5), "flex_share": (0.0, 1.0), "rebound": (0.0, 2.0)}


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

    def telemetry(self):
        return {"p_kw": self.p_kw, "p_base_kw": self.p_base_kw, "curtail_pct": self.curtail_pct}

    def aggregates(self):
        return {"p_kw": float(self.p_kw.sum()), "p_base_kw": float(self.p_base_kw.sum())}
