"""Seeded synthetic dispatch problems for tests, benchmarks and demos (not used in operation).

Parameters follow the twin's defaults (10 kWh / 5 kW batteries, 11 kW EV chargers, 5 kW flex
loads) with some spread, on a day with a morning and an evening price peak.
"""

from __future__ import annotations

import numpy as np

from controller.dispatch.problem import (
    Batteries,
    DispatchProblem,
    EvSessions,
    FlexLoads,
    PvUnits,
    TclBattery,
)


def day_prices(n: int, step_s: float, t0_hour: float = 0.0) -> np.ndarray:
    """EUR/MWh with a cheap night, a midday solar dip and an evening peak."""
    h = (t0_hour + np.arange(n) * step_s / 3600.0) % 24.0
    return (60 + 40 * np.exp(-((h - 8) / 1.5) ** 2) + 90 * np.exp(-((h - 19) / 2.0) ** 2)
            - 30 * np.exp(-((h - 13) / 2.5) ** 2))


def random_problem(n_bat=4, n_pv=3, n_ev=3, n_flex=2, n_tcl=0, n_steps=96, step_s=900.0,
                   n_buses=3, seed=0, identical=False, t0_hour=0.0) -> DispatchProblem:
    rng = np.random.default_rng(seed)
    h = (t0_hour + np.arange(n_steps) * step_s / 3600.0) % 24.0
    sun = np.clip(np.sin(np.pi * (h - 6) / 12), 0, None)
    bus = lambda k: rng.integers(1, n_buses + 1, k)
    u = (lambda lo, hi, k: np.full(k, (lo + hi) / 2)) if identical else (
        lambda lo, hi, k: rng.uniform(lo, hi, k))
    cap = u(8, 14, n_bat)
    bats = Batteries([f"bat/{i}" for i in range(n_bat)], bus(n_bat), u(3, 6, n_bat), cap,
                     u(0.2, 0.8, n_bat) * cap, 0.1 * cap, 0.95 * cap, np.full(n_bat, 0.95),
                     np.full(n_bat, 0.95), np.full(n_bat, 0.01))
    peak = u(3, 8, n_pv)
    pv = PvUnits([f"pv/{i}" for i in range(n_pv)], bus(n_pv),
                 peak[:, None] * sun[None, :] * rng.uniform(0.7, 1.0, (n_pv, 1)), peak)
    dep = rng.integers(max(n_steps // 3, 1), n_steps + 8, n_ev)
    evs = EvSessions([f"ev/{i}" for i in range(n_ev)], bus(n_ev), np.full(n_ev, 11.0),
                     u(5, 30, n_ev), dep, np.ones(n_ev, bool), np.full(n_ev, 0.92))
    base = u(2, 6, n_flex)[:, None] * (0.6 + 0.4 * np.exp(-((h - 19) / 3) ** 2))[None, :]
    flex = FlexLoads([f"flex/{i}" for i in range(n_flex)], bus(n_flex), base,
                     np.full(n_flex, 0.5), np.full(n_flex, 0.5), u(1, 2, n_flex))
    tcls = [TclBattery(f"tcl{j}", int(bus(1)[0]), np.full(n_steps, 20.0), np.full(n_steps, 80.0),
                       0.0, 60.0, 30.0, np.full(n_steps, 50.0)) for j in range(n_tcl)]
    load = 40 * (n_bat + n_pv + n_ev + n_flex + 1) / 10 * (0.5 + 0.5 * np.exp(-((h - 19) / 3) ** 2))
    return DispatchProblem(t0=1.7e9 + t0_hour * 3600, step_s=step_s, n_steps=n_steps,
                           prices_eur_per_mwh=day_prices(n_steps, step_s, t0_hour),
                           net_load_forecast_kw=load, batteries=bats if n_bat else None,
                           pv=pv if n_pv else None, evs=evs if n_ev else None,
                           tcls=tcls, flex=flex if n_flex else None)
