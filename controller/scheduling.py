"""Rolling schedule for the cycle: fills a `DispatchProblem` from the fleet state and prices,
solves it with the dispatch helper's `Dispatcher`, and returns per-group setpoint series the
cycle applies step by step (and the historian keeps, so a restart resumes them).

Batteries are scheduled (arbitrage at the scenario's prices, or peak shaving at the feeder
head against the head-load forecast); EVs, flexible loads and PV stay with their owners
unless DR or an emergency needs them.
"""

from __future__ import annotations

import logging

import numpy as np

from controller.kinds import KINDS
from controller.state import FleetState

log = logging.getLogger("controller.schedule")


class BatteryScheduler:
    """price_fn(t_epoch_array) -> EUR/MWh; net_load_fn(t_array) -> kW head forecast (optional).
    With a `head_forecast` (forecasting.head.HeadLoadForecast) each optimisation first observes
    the head meter minus the batteries and uses that forecast as the net load: what the
    'peak' objective shaves and what the planned head P (data["head_p_kw"]) is built on."""

    def __init__(self, price_fn, step_s: float = 900.0, n_steps: int = 96, net_load_fn=None,
                 objective: str = "cost", deg_cost_eur_per_kwh: float = 0.02, head_forecast=None):
        from controller.dispatch.dispatcher import Dispatcher

        self.dispatcher = Dispatcher()
        self.price_fn = price_fn
        self.head_forecast = head_forecast
        self.net_load_fn = net_load_fn if net_load_fn is not None else head_forecast
        self.step_s, self.n_steps = step_s, n_steps
        self.objective = objective
        self.deg = deg_cost_eur_per_kwh
        self.last_stats = None

    def optimize(self, t: float, state: FleetState) -> dict | None:
        from controller.dispatch import Batteries, DispatchProblem, Weights

        if self.head_forecast is not None:
            self.head_forecast.observe_state(t, state)
        groups = [g for g in state.groups.values() if g.kind == "battery"]
        if not groups:
            return None
        t0 = np.floor(t / self.step_s) * self.step_s
        times = t0 + self.step_s * np.arange(self.n_steps)
        ids, bus, cols = [], [], {k: [] for k in ("p_max_kw", "e_cap_kwh", "soc_kwh", "soc_min_kwh",
                                                  "soc_max_kwh", "eta_ch", "eta_dis")}
        slices = {}
        for g in groups:
            use = g.usable() & np.isfinite(g.get("soc_kwh"))
            j = np.flatnonzero(use)
            slices[g.group] = j
            ids += [g.ids[i] for i in j]
            bus.append(g.bus[j])
            defaults = KINDS["battery"].plan_ratings(g, j)
            for k in cols:
                cols[k].append(defaults[k])
        if not ids:
            return None
        c = {k: np.concatenate(v).astype(float) for k, v in cols.items()}
        c["soc_kwh"] = np.clip(c["soc_kwh"], c["soc_min_kwh"], c["soc_max_kwh"])
        bat = Batteries(ids, np.concatenate(bus), c["p_max_kw"], c["e_cap_kwh"], c["soc_kwh"],
                        c["soc_min_kwh"], c["soc_max_kwh"], c["eta_ch"], c["eta_dis"],
                        np.full(len(ids), self.deg))
        net = (np.asarray(self.net_load_fn(times), float) if self.net_load_fn
               else np.zeros(self.n_steps))
        w = Weights(peak_eur_per_kw=5.0 if self.objective == "peak" else 0.0)
        prob = DispatchProblem(t0, self.step_s, self.n_steps,
                               np.asarray(self.price_fn(times), float), net, batteries=bat, weights=w)
        sched = self.dispatcher.day_ahead(prob)
        self.last_stats = sched.stats
        data = {"setpoints": {}, "objective_eur": sched.objective_eur,
                "stats": {"variables": sched.stats.variables, "constraints": sched.stats.constraints,
                          "build_s": round(sched.stats.build_s, 4),
                          "solve_s": round(sched.stats.solve_s, 4)}}
        battery_kw = np.zeros(self.n_steps)
        for g in groups:
            vals = np.zeros((g.n, self.n_steps))
            for i in slices[g.group]:
                vals[i] = np.clip(sched.p_kw[g.ids[i]], -g.rating("p_max_kw")[i], g.rating("p_max_kw")[i])
            data["setpoints"][g.group] = {"setpoint": "p_set_kw",
                                          "values": np.round(vals, 4).tolist()}
            battery_kw += vals.sum(axis=0)
        if self.net_load_fn is not None:  # the planned feeder-head P: forecast net load + batteries
            data["head_p_kw"] = np.round(net + battery_kw, 3).tolist()
        return {"t0": float(t0), "step_s": self.step_s, "kind": "battery_rolling", "data": data}
