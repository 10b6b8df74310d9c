"""Thermostatically controlled loads (air conditioners, heat pumps): ETP physics per device.

Parameters are drawn per device (R, C, rated electric power, COP, setpoint, deadband,
comfort band, minimum on/off times, mode); the kernels live in twin.tcl_kernel.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from scenarios.model import Uniform
from twin.fleet.base import Ambient, Ambients, Fleet, SetpointError, integrate_steps
from twin.params import ParamError, draw_all
from twin.tcl_kernel import KernelChoice, advance_second_order, n_blocks_for


def _u(lo: float, hi: float) -> Uniform:
    return Uniform(dist="uniform", low=lo, high=hi)


DEFAULTS = {
    "r_c_per_kw": _u(1.6, 2.4),  # thermal resistance envelope, degC per kW
    "c_kwh_per_c": _u(1.6, 2.4),  # thermal capacitance, kWh per degC
    "p_rated_kw": _u(3.5, 5.5),  # electric power when running
    "cop": _u(2.5, 3.5),
    "t_set_c": _u(21.0, 24.0),  # user setpoint
    "deadband_c": _u(0.4, 0.6),  # full width of the thermostat hysteresis
    "comfort_c": 1.0,  # user band half-width around t_set_c; outside it counts degree-minutes
    "min_on_s": _u(120.0, 240.0),
    "min_off_s": _u(120.0, 240.0),
    "mode": 1.0,  # +1 cooling, -1 heating
    "order": 1.0,  # 1: first-order ETP; 2: air/mass ETP
    "air_share": 0.2,  # order 2: share of C in the air node, the rest is mass
    "r_mass_c_per_kw": 0.5,  # order 2: air-mass coupling resistance
}
BOUNDS = {
    "r_c_per_kw": (1e-3, 100.0), "c_kwh_per_c": (1e-3, 1e3), "p_rated_kw": (0.0, 1e4),
    "cop": (0.1, 10.0), "t_set_c": (-10.0, 90.0), "deadband_c": (0.0, 10.0),
    "comfort_c": (0.0, 20.0), "min_on_s": (0.0, 7200.0), "min_off_s": (0.0, 7200.0),
    "mode": (-1.0, 1.0), "order": (1.0, 2.0), "air_share": (0.01, 0.99),
    "r_mass_c_per_kw": (1e-3, 100.0),
}


class TclFleet(Fleet):
    """Setpoints: `t_offset_c` (thermostat offset), `force` (-1 off / 0 auto / +1 on; direct
    load control, waits out lockouts unless `override` is 1), `frac_on_pct`/`frac_off_pct`
    (one-shot: that share of eligible devices in their deadband switches at the next step)."""

    KIND = "tcl"
    SETPOINTS: ClassVar[dict[str, tuple]] = {"t_offset_c": (-5.0, 5.0), "force": (-1.0, 1.0), "override": (0.0, 1.0),
                 "frac_on_pct": (0.0, 100.0), "frac_off_pct": (0.0, 100.0)}
    INTEGER_SETPOINTS = ("force", "override")

    def __init__(self, group, bus, rng, scenario=None, t_out0_c: float | None = None):
        super().__init__(group.name, bus)
        p = draw_all(group, DEFAULTS, rng, BOUNDS)
        for key in ("mode", "order"):
            vals = np.unique(p[key])
            if vals.size and not np.all(np.isin(vals, [-1.0, 1.0] if key == "mode" else [1.0, 2.0])):
                raise ParamError(f"fleet '{group.name}': params.{key}: value {vals[0]:g} not allowed "
                                 f"(mode: -1 or 1; order: 1 or 2)")
        orders = np.unique(p["order"])
        if orders.size > 1:
            raise ParamError(f"fleet '{group.name}': params.order must be one value for the group")
        self.order = int(orders[0]) if orders.size else 1
        self.r_c_per_kw, self.c_kwh_per_c = p["r_c_per_kw"], p["c_kwh_per_c"]
        self.p_rated_kw, self.cop = p["p_rated_kw"], p["cop"]
        self.t_set_c, self.deadband_c, self.comfort_c = p["t_set_c"], p["deadband_c"], p["comfort_c"]
        self.min_on_s, self.min_off_s = p["min_on_s"], p["min_off_s"]
        self.mode = p["mode"]
        self.air_share, self.r_mass_c_per_kw = p["air_share"], p["r_mass_c_per_kw"]
        self.half_db_c = self.deadband_c / 2.0
        self.p_th_kw = self.cop * self.p_rated_kw
        self.gain_c = self.r_c_per_kw * self.p_th_kw  # steady-state temperature drop when on
        self.tau_s = self.r_c_per_kw * self.c_kwh_per_c * 3600.0
        # controls
        self.t_offset_c = np.zeros(self.n)
        self.force = np.zeros(self.n, dtype=np.int8)
        self.override = np.zeros(self.n, dtype=np.bool_)
        self.frac_on_pct = np.zeros(self.n)
        self.frac_off_pct = np.zeros(self.n)
        # state: start near the thermostat's limit cycle (uniform in band, duty-weighted on)
        if t_out0_c is None:
            t_out0_c = self._t_out_at_start(scenario)
        duty = np.clip(self.mode * (t_out0_c - self.t_set_c) / np.maximum(self.gain_c, 1e-9), 0, 1)
        self.t_in_c = self.t_set_c + rng.uniform(-1.0, 1.0, self.n) * self.half_db_c
        self.t_mass_c = self.t_in_c.copy()
        self.on = (rng.uniform(size=self.n) < duty).astype(np.int8)
        self.since_switch_s = rng.uniform(0.0, 600.0, self.n)
        self.switches = np.zeros(self.n, dtype=np.int64)
        self.comfort_dm = np.zeros(self.n)
        self.lockout_violations = np.zeros(self.n, dtype=np.int64)
        self.seed = int(rng.integers(0, 2**62))
        self.steps = 0
        self.elapsed_s = 0.0
        self._dt = None
        self._blocks = n_blocks_for(self.n)
        self.kernel = KernelChoice()
        self._agg = np.zeros(1)
        self._t_out = np.zeros(1)
        self.p_kw = self.on * self.p_rated_kw

    @staticmethod
    def _t_out_at_start(scenario) -> float:
        if scenario is None:
            return 30.0
        w = scenario.weather
        if w.kind != "synthetic":
            return w.t_out_mean_c
        st = scenario.start
        local_h = (st.hour + st.minute / 60.0 + w.longitude_deg / 15.0) % 24.0
        return w.t_out_mean_c + w.t_out_swing_c * math.cos(2 * math.pi * (local_h - 15.0) / 24.0)

    def _coefficients(self, dt_s: float) -> None:
        self._dt = dt_s
        self.decay = np.exp(-dt_s / self.tau_s)
        if self.order == 2:
            c_a = self.c_kwh_per_c * self.air_share * 3600.0  # kJ/degC -> kW*s/degC
            c_m = self.c_kwh_per_c * (1.0 - self.air_share) * 3600.0
            self.k_out = 1.0 / (self.r_c_per_kw * c_a)
            self.k_mass_a = 1.0 / (self.r_mass_c_per_kw * c_a)
            self.k_mass_m = 1.0 / (self.r_mass_c_per_kw * c_m)
            self.k_hvac = self.p_th_kw / c_a
            fastest = float(np.max(self.k_out + self.k_mass_a, initial=0.0))
            self.n_sub = max(1, math.ceil(dt_s * fastest / 0.05))

    def step(self, dt_s: float, amb: Ambient) -> None:
        if self._dt != dt_s:
            self._coefficients(dt_s)
        self._t_out[0] = amb.t_out_c
        self._agg[0] = 0.0
        if self.order == 1:
            self._first_order(self._t_out, dt_s, self._agg)
        else:
            fon, foff = self.frac_on_pct / 100.0, self.frac_off_pct / 100.0
            advance_second_order(self.t_in_c, self.t_mass_c, self.on, self.since_switch_s,
                                 self.switches, self.comfort_dm, self.lockout_violations,
                                 self.k_out, self.k_mass_a, self.k_mass_m, self.k_hvac,
                                 self.p_rated_kw, self.mode, self.t_set_c, self.half_db_c,
                                 self.comfort_c, self.min_on_s, self.min_off_s, self.t_offset_c,
                                 self.force, self.override, fon, foff, self.available,
                                 self._t_out, dt_s, self.n_sub, self.seed, self.steps,
                                 self._blocks, self._agg)
        self.frac_on_pct[:] = 0.0  # one-shot commands
        self.frac_off_pct[:] = 0.0
        np.multiply(self.on, self.p_rated_kw, out=self.p_kw)
        self.steps += 1
        self.elapsed_s += dt_s

    def _first_order(self, t_out_c: np.ndarray, dt_s: float, agg_kw: np.ndarray) -> None:
        """len(t_out_c) first-order steps; one-shot fraction commands apply at the first."""
        fon, foff = self.frac_on_pct / 100.0, self.frac_off_pct / 100.0
        self.kernel.run(self.t_in_c, self.on, self.since_switch_s, self.switches, self.comfort_dm,
                         self.lockout_violations, self.decay, self.gain_c, self.p_rated_kw,
                         self.mode, self.t_set_c, self.half_db_c, self.comfort_c, self.min_on_s,
                         self.min_off_s, self.t_offset_c, self.force, self.override, fon, foff,
                         self.available, t_out_c, dt_s, self.seed, self.steps, self._blocks, agg_kw)

    def advance(self, dt_s: float, ambs: Ambients) -> None:
        """k steps in one kernel call (first-order model): the same per-step arithmetic, hash
        stream (step counter) and one-shot fraction commands (applied at the first step)."""
        k = len(ambs)
        if k < 2 or self.order != 1:
            return super().advance(dt_s, ambs)
        if self._dt != dt_s:
            self._coefficients(dt_s)
        t_out = np.ascontiguousarray(ambs.t_out_c, dtype=float)
        agg = np.zeros(k)
        self._first_order(t_out, dt_s, agg)
        self.frac_on_pct[:] = 0.0
        self.frac_off_pct[:] = 0.0
        np.multiply(self.on, self.p_rated_kw, out=self.p_kw)
        self.steps += k
        self.elapsed_s += k * dt_s
        self.energy_kwh = integrate_steps(self.energy_kwh, agg, dt_s)  # as k integrate() calls

    def write(self, name: str, index, value) -> None:
        if name in self.INTEGER_SETPOINTS:
            v = np.asarray(value, dtype=float)
            if np.any(np.isfinite(v) & (v != np.round(v))):
                bad = float(np.atleast_1d(v)[np.flatnonzero(np.atleast_1d(v != np.round(v)))[0]])
                raise SetpointError(f"{self.name}.{name}={bad:g}: must be an integer "
                                    f"({'-1, 0 or 1' if name == 'force' else '0 or 1'})")
        super().write(name, index, value)

    # --- views ----------------------------------------------------------------------------
    def telemetry(self) -> dict[str, np.ndarray]:
        return {"p_kw": self.p_kw, "on": self.on, "t_in_c": self.t_in_c, "t_set_c": self.t_set_c,
                "t_offset_c": self.t_offset_c, "force": self.force}

    def aggregates(self) -> dict[str, float]:
        return {"p_kw": float(self.p_kw.sum()), "on_count": float(self.on.sum()),
                "t_in_mean_c": float(self.t_in_c.mean()) if self.n else 0.0}

    def kpis(self) -> dict:
        hours = self.elapsed_s / 3600.0
        return {
            **super().kpis(),
            "comfort_degree_minutes": round(float(self.comfort_dm.sum()), 3),
            "comfort_degree_minutes_per_device": round(float(self.comfort_dm.mean()), 5) if self.n else 0.0,
            "switchings_per_device_per_hour": (round(float(self.switches.mean()) / hours, 4)
                                               if hours > 0 and self.n else 0.0),
            "lockout_violations": int(self.lockout_violations.sum()),
        }
