"""Rolling schedule for the cycle: fills a `DispatchProblem` from the controller's own state
(telemetry, learnt forecasts, the TCL groups' models) and prices, solves it with the dispatch
optimizer (controller/dispatch/, Pyomo + HiGHS) and returns per-group setpoint series the
cycle applies step by step (the historian keeps them, so a restart resumes them).

Every controllable class the fleet has is scheduled:
- batteries: arbitrage at the prices, or peak shaving at the head (objective "peak"), within
  their SOC limits;
- EV chargers: their energy need by departure (`departure_t` from telemetry where the link
  reports it, else the group's configured departure hour, else `DEFAULT_DWELL_S` from now),
  at the cheapest steps; the charging cap `p_max_set_kw` is the planned power;
- PV: curtailed (`p_limit_pct`) only where it pays: negative prices, or an export limit;
- flexible loads: their flexible share cut (`curtail_pct`) where it pays, the owed energy paid
  back later (the device's rebound);
- TCL groups: the group's virtual battery (baseline, power and energy bounds from
  controller/tcl_dispatch.py's model); the plan is a group power target the group's switching
  law follows (no setpoint series per unit).

The optimizer sees one virtual unit per device group and class (no grid rows: the safety gate
keeps the feeder in band), so the LP keeps its structure between solves and HiGHS restarts
from its last basis; results are split back per device by controller/dispatch/aggregate.py.
Forecasts: per group, the quarter-hour-of-day mean of what telemetry showed over the last days
(`forecasting.head.HeadLoadForecast`), the value measured now for the first step; after a
restart the PV and flexible-load profiles are refilled from the historian's device telemetry
(`seed_profiles`, when `telemetry_every_s` records it).
"""

from __future__ import annotations

import logging

import numpy as np

from controller.forecasting.head import HeadLoadForecast
from controller.kinds import KINDS
from controller.state import FleetState

log = logging.getLogger("controller.schedule")

CLASSES = ("battery", "ev", "pv", "flex_load", "tcl")
SEEDED = {"pv": "p_avail_kw", "flex_load": "p_base_kw"}  # class -> what its group profile learns
DEFAULT_DWELL_S = 8 * 3600.0  # EV departure when neither telemetry nor config gives one
EV_MARGIN_STEPS = 1  # plan each car full this many steps before its departure
FLEX_REBOUND = 0.5  # share of curtailed energy a flexible load owes back (device default)
FLEX_PAYBACK_FRAC = 0.3  # payback rate, share of p_nom_kw (device default)
# A flexible load pays its owed energy back as soon as its curtailment ends (not when the plan
# would like): cut only where the spread pays for discomfort and an early payback, and never
# leave energy owed at the horizon end (shifted, not shed).
TCL_DEADBAND_KW, TCL_DEADBAND_FRAC = 0.5, 0.05  # a TCL plan this close to baseline leaves the group alone
FLEX_DISCOMFORT = 0.08  # EUR/kWh curtailed
FLEX_OWED_END = 1.0  # EUR/kWh still owed at the horizon end


class FleetScheduler:
    """price_fn(t_epoch_array) -> EUR/MWh; net_load_fn(t_array) -> kW head forecast (optional).
    With a `head_forecast` (forecasting.head.HeadLoadForecast) each optimisation first observes
    the head meter minus every scheduled device and uses that forecast as the uncontrolled net
    load: what the 'peak' objective shaves and what the planned head P (data["head_p_kw"]) is
    built on. `ev_departure_h`: {group: hour of day UTC} for chargers that do not report their
    departure. `export_limit_kw`: the most the feeder may export (None: no limit).
    `time_limit_s` bounds each HiGHS solve; `timezone` (IANA) is the local clock the group
    profiles are learnt on."""

    def __init__(self, price_fn, step_s: float = 900.0, n_steps: int = 96, net_load_fn=None,
                 objective: str = "cost", deg_cost_eur_per_kwh: float = 0.02, head_forecast=None,
                 ev_departure_h: dict | None = None, export_limit_kw: float | None = None,
                 time_limit_s: float = 2.0, classes: tuple[str, ...] = CLASSES, timezone: str = "UTC"):
        from controller.dispatch.dispatcher import Dispatcher

        opts = {"time_limit": float(time_limit_s)}
        self.dispatcher = Dispatcher(day_ahead_options={**Dispatcher.DAY_AHEAD_OPTIONS, **opts})
        self.price_fn = price_fn
        self.head_forecast = head_forecast
        self.net_load_fn = net_load_fn if net_load_fn is not None else head_forecast
        self.step_s, self.n_steps = step_s, n_steps
        self.objective = objective
        self.deg = deg_cost_eur_per_kwh
        self.ev_departure_h = dict(ev_departure_h or {})
        self.export_limit_kw = export_limit_kw
        self.classes = tuple(classes)
        self.timezone = timezone  # group profiles are learnt per quarter hour of this local clock
        self.tcl = None  # controller.tcl_dispatch.TclDispatcher (set by the schedule source)
        self.profiles: dict[str, HeadLoadForecast] = {}  # group -> learnt PV/flex/TCL profile
        self.last_stats = None

    def seed_profiles(self, hist, until: float, groups: dict[str, tuple[str, list[str]]]) -> dict[str, int]:
        """After a restart: the PV and flexible-load groups' profiles from the historian's
        device telemetry (needs `telemetry_every_s`), {group: slots seeded}. TCL groups relearn:
        their baseline is the group model's, not a telemetry value."""
        out = {}
        for group, (kind, ids) in groups.items():
            name = SEEDED.get(kind)
            if name is not None and kind in self.classes:
                f = self.profiles.setdefault(group, HeadLoadForecast(self.step_s, timezone=self.timezone))
                out[group] = f.seed_group(hist, until, name, ids)
        return out

    # --- what the problem is made of -------------------------------------------------------------
    def _groups(self, state: FleetState, kind: str) -> list:
        return [g for g in state.groups.values() if g.kind == kind and g.n and kind in self.classes]

    def _profile(self, t: float, group: str, now_kw: float, times: np.ndarray) -> np.ndarray:
        """Forecast of a group total (learnt quarter-hour profile), `now_kw` for the first step."""
        f = self.profiles.setdefault(group, HeadLoadForecast(self.step_s, timezone=self.timezone))
        f.observe(t, now_kw)
        out = np.asarray(f(times), float)
        out[0] = now_kw
        return out

    def _batteries(self, state, unit):
        from controller.dispatch import Batteries

        groups = self._groups(state, "battery")
        ids, bus, cols, rows = [], [], {k: [] for k in ("p_max_kw", "e_cap_kwh", "soc_kwh", "soc_min_kwh",
                                                         "soc_max_kwh", "eta_ch", "eta_dis")}, {}
        for g in groups:
            j = np.flatnonzero(g.usable() & np.isfinite(g.get("soc_kwh")) & np.isfinite(g.rating("p_max_kw")))
            rows[g.group] = j
            ids += [g.ids[i] for i in j]
            bus.append(np.full(j.size, unit(g.group)))
            plan = KINDS["battery"].plan_ratings(g, j)
            for k, col in cols.items():
                col.append(plan[k])
        if not ids:
            return None, {}
        c = {k: np.concatenate(v).astype(float) for k, v in cols.items()}
        c["soc_kwh"] = np.clip(c["soc_kwh"], c["soc_min_kwh"], c["soc_max_kwh"])
        return Batteries(ids, np.concatenate(bus), c["p_max_kw"], c["e_cap_kwh"], c["soc_kwh"],
                         c["soc_min_kwh"], c["soc_max_kwh"], c["eta_ch"], c["eta_dis"],
                         np.full(len(ids), self.deg)), rows

    def _departure_t(self, g, t: float) -> np.ndarray:
        """Departure per charger: telemetry, else the group's configured hour, else a default dwell."""
        dep = g.get("departure_t")
        h = self.ev_departure_h.get(g.group)
        if h is not None:
            day = np.floor(t / 86400.0) * 86400.0
            cfg = day + 3600.0 * float(h)
            cfg = cfg + 86400.0 if cfg <= t else cfg
        else:
            cfg = t + DEFAULT_DWELL_S
        return np.where(np.isfinite(dep) & (dep > t), dep, cfg)

    def _evs(self, state, t, t0, unit):
        from controller.dispatch import EvSessions

        groups = self._groups(state, "ev")
        parts, rows = [], {}
        for g in groups:
            j = np.flatnonzero(g.usable() & np.isfinite(g.rating("p_max_kw")))
            rows[g.group] = j
            conn = (g.get("connected")[j] > 0.5)
            need = np.nan_to_num(g.get("e_need_kwh")[j])
            dep = self._departure_t(g, t)[j]
            # full one step before departure (room for gate curtailments and the next re-plan);
            # a car leaving within the next two steps still gets the first one
            dep_step = np.maximum(np.floor((dep - t0) / self.step_s) - EV_MARGIN_STEPS, 1).astype(int)
            parts.append(([g.ids[i] for i in j], np.full(j.size, unit(g.group)), g.rating("p_max_kw")[j],
                          need, dep_step, conn & (need > 0.01), g.rating("eta", 0.92)[j]))
        if not any(p[0] for p in parts):
            return None, {}
        ids = [d for p in parts for d in p[0]]
        cat = [np.concatenate([p[k] for p in parts]) for k in range(1, 7)]
        return EvSessions(ids, cat[0], cat[1].astype(float), cat[2], np.maximum(cat[3], 0), cat[4],
                          np.nan_to_num(cat[5], nan=0.92)), rows

    def _pv(self, state, t, times, unit):
        from controller.dispatch import PvUnits

        ids, bus, avail, rated, rows = [], [], [], [], {}
        for g in self._groups(state, "pv"):
            j = np.flatnonzero(g.usable())
            rows[g.group] = j
            now = np.nan_to_num(g.get("p_avail_kw")[j])
            s = KINDS["pv"].size_kw(g)[j]
            s = np.where(np.isfinite(s), s, np.maximum(now, 1e-3))
            total = self._profile(t, g.group, float(now.sum()), times)
            share = now / now.sum() if now.sum() > 1e-6 else s / s.sum()
            ids += [g.ids[i] for i in j]
            bus.append(np.full(j.size, unit(g.group)))
            avail.append(np.minimum(share[:, None] * total[None, :], s[:, None]))
            rated.append(s)
        if not ids:
            return None, {}
        return PvUnits(ids, np.concatenate(bus), np.vstack(avail), np.concatenate(rated)), rows

    def _flex(self, state, t, times, unit):
        from controller.dispatch import FlexLoads

        ids, bus, base, share, reb, pay, rows = [], [], [], [], [], [], {}
        for g in self._groups(state, "flex_load"):
            j = np.flatnonzero(g.usable() & np.isfinite(g.get("p_base_kw")))
            rows[g.group] = j
            now = np.maximum(g.get("p_base_kw")[j], 0.0)
            p_nom = g.rating("p_nom_kw")[j]
            p_nom = np.where(np.isfinite(p_nom), p_nom, now)
            total = self._profile(t, g.group, float(now.sum()), times)
            w = now / now.sum() if now.sum() > 1e-6 else p_nom / max(p_nom.sum(), 1e-9)
            ids += [g.ids[i] for i in j]
            bus.append(np.full(j.size, unit(g.group)))
            base.append(w[:, None] * total[None, :])
            share.append(np.clip(np.nan_to_num(g.rating("flex_share")[j], nan=1.0), 0.0, 1.0))
            reb.append(np.nan_to_num(g.rating("rebound")[j], nan=FLEX_REBOUND))
            pay.append(FLEX_PAYBACK_FRAC * p_nom)
        if not ids:
            return None, {}
        return FlexLoads(ids, np.concatenate(bus), np.vstack(base), np.concatenate(share),
                         np.concatenate(reb), np.concatenate(pay)), rows

    def _tcls(self, state, t, times, unit) -> list:
        """One virtual battery per TCL group the controller models (controller.tcl_dispatch)."""
        from controller.dispatch import TclBattery

        out = []
        if self.tcl is None:
            return out
        for g in self._groups(state, "tcl"):
            m = self.tcl.models.get(g.group)
            if m is None or m.refused or not m.usable.any():
                continue
            base_now = float(np.nan_to_num(m.mean_kw())[m.usable].sum())
            base = self._profile(t, g.group, base_now, times)
            fl = m.flexibility()
            p_max = float(np.nan_to_num(m.p_rated_kw)[m.usable].sum())
            if fl["e_max_kwh"]:
                e_max, e0 = float(fl["e_max_kwh"]), float(fl["energy_kwh"])
            else:  # not identified yet: a fixed share of the baseline for one hour
                e_max = m.cfg.fallback_share * base_now
                e0 = e_max / 2.0
            out.append(TclBattery(g.group, unit(g.group), np.zeros(self.n_steps),
                                  np.full(self.n_steps, max(p_max, base.max())), 0.0, e_max,
                                  min(max(e0, 0.0), e_max), base))
        return out

    # --- the solve ---------------------------------------------------------------------------------
    def optimize(self, t: float, state: FleetState, dr_windows=()) -> dict | None:
        """The plan from now; `dr_windows` [(start_t, end_t)]: DR events ahead, whose steps the
        plan leaves to the DR program (DispatchProblem.reserve_steps)."""
        from controller.dispatch import DispatchProblem, Weights

        t0 = float(t)
        times = t0 + self.step_s * np.arange(self.n_steps)
        units: dict[str, int] = {}
        unit = lambda group: units.setdefault(group, len(units))  # one LP unit per group
        bat, bat_rows = self._batteries(state, unit)
        evs, ev_rows = self._evs(state, t, t0, unit)
        pv, pv_rows = self._pv(state, t, times, unit)
        flex, flex_rows = self._flex(state, t, times, unit)
        tcls = self._tcls(state, t, times, unit)
        if bat is None and evs is None and pv is None and flex is None and not tcls:
            return None
        if self.head_forecast is not None:
            self._observe_head(t, state)
        net = (np.asarray(self.net_load_fn(times), float) if self.net_load_fn
               else np.zeros(self.n_steps))
        w = Weights(peak_eur_per_kw=5.0 if self.objective == "peak" else 0.0,
                    flex_eur_per_kwh=FLEX_DISCOMFORT, flex_owed_end_eur_per_kwh=FLEX_OWED_END)
        prices = np.asarray(self.price_fn(times + self.step_s / 2.0), float)
        reserve = np.zeros(self.n_steps, bool)
        for a, b in dr_windows:
            reserve |= (times < b) & (times + self.step_s > a)
        prob = DispatchProblem(t0, self.step_s, self.n_steps, prices, net, batteries=bat, pv=pv,
                               evs=evs, flex=flex, tcls=tcls, export_limit_kw=self.export_limit_kw,
                               reserve_steps=reserve if reserve.any() else None, weights=w)
        sched = self.dispatcher.day_ahead(prob)
        self.last_stats = sched.stats
        return {"t0": t0, "step_s": self.step_s, "kind": "fleet_rolling",
                "data": self._data(state, prob, sched, net,
                                   {"battery": bat_rows, "ev": ev_rows, "pv": pv_rows, "flex_load": flex_rows})}

    def _observe_head(self, t: float, state: FleetState) -> None:
        """The uncontrolled head: head meter P minus every device the schedule steers."""
        meter = next((g for g in state.groups.values() if g.kind == "meter" and g.n), None)
        if meter is None or not meter.usable().any() or not np.isfinite(meter.get("p_kw")).any():
            return
        steered = sum(float(np.nansum(g.get("p_kw"))) for g in state.groups.values()
                      if g.kind in self.classes and "p_kw" in g.values)
        self.head_forecast.observe(t, float(np.nansum(meter.get("p_kw"))) - steered)

    def _data(self, state, prob, sched, net, rows) -> dict:
        """The historian/API form: per group the setpoint series (device x step; NaN-free, devices
        the plan does not cover hold their released value), per group the planned kW, the
        planned head, TCL targets, objective and solver figures."""
        st = sched.stats
        data = {"setpoints": {}, "group_p_kw": {}, "tcl_p_target_kw": {},
                "objective_eur": round(sched.objective_eur, 4),
                "objective_terms": {k: round(v, 4) for k, v in sched.objective_terms.items()},
                "stats": {"variables": st.variables, "constraints": st.constraints,
                          "build_s": round(st.build_s, 4), "solve_s": round(st.solve_s, 4),
                          "reused_model": st.reused_model, "n_groups": st.n_groups}}
        n = self.n_steps
        total = np.zeros(n)
        steps = np.arange(n)
        at = {kind: {d: i for i, d in enumerate(x.device_ids)}
              for kind, x in (("pv", prob.pv), ("flex_load", prob.flex)) if x is not None}
        for kind, per in rows.items():
            k = KINDS[kind]
            for gname, j in per.items():
                g = state.groups[gname]
                if not j.size:
                    continue
                p = np.array([sched.p_kw[g.ids[i]] for i in j])  # (devices, steps), load +
                total += p.sum(axis=0)
                data["group_p_kw"][gname] = np.round(p.sum(axis=0), 3).tolist()
                if kind == "battery":
                    sp, vals = "p_set_kw", np.zeros((g.n, n))
                    vals[j] = np.clip(p, -g.rating("p_max_kw")[j, None], g.rating("p_max_kw")[j, None])
                elif kind == "ev":
                    sp, vals = "p_max_set_kw", np.tile(k.released(g)[:, None], (1, n))
                    vals[j] = p
                elif kind == "pv":
                    sp, vals = "p_limit_pct", np.full((g.n, n), 100.0)
                    idx = [at[kind][g.ids[i]] for i in j]
                    avail = np.asarray(prob.pv.p_avail_kw)[idx]
                    cut = avail + p  # p = -(avail - curtailed)
                    s = np.asarray(prob.pv.s_rated_kva)[idx]
                    lim = np.clip(100.0 * -p / s[:, None], 0.0, 100.0)
                    vals[j] = np.where(cut > 1e-3, lim, 100.0)
                else:  # flex_load
                    sp, vals = "curtail_pct", np.zeros((g.n, n))
                    base = np.asarray(prob.flex.p_base_kw)[[at[kind][g.ids[i]] for i in j]]
                    cmax = base * np.clip(np.nan_to_num(g.rating("flex_share")[j], nan=1.0), 0, 1)[:, None]
                    cut = np.maximum(base - p, 0.0)  # payback steps (p above base) are the device's own
                    vals[j] = np.divide(100.0 * cut, cmax, out=np.zeros_like(cut), where=cmax > 1e-9)
                on = np.any(np.abs(vals - _neutral(kind, k, g)[:, None]) > 1e-3, axis=0)
                data["setpoints"][gname] = {"setpoint": sp, "values": _rows(np.round(vals, 3)),
                                            "active_steps": steps[on].tolist()}
        data["tcl_active_steps"] = {}
        for tb in prob.tcls:
            p = sched.p_kw[f"{tb.name}/*"]
            total += p
            data["tcl_p_target_kw"][tb.name] = np.round(p, 3).tolist()
            dev = np.abs(p - tb.p_base_kw) > np.maximum(TCL_DEADBAND_KW, TCL_DEADBAND_FRAC * tb.p_base_kw)
            data["tcl_active_steps"][tb.name] = steps[dev].tolist()  # where the plan moves the group
            data["group_p_kw"][tb.name] = np.round(p, 3).tolist()
        data["price_eur_per_mwh"] = np.round(prob.prices_eur_per_mwh, 3).tolist()
        if self.net_load_fn is not None:  # the planned feeder-head P: forecast net load + fleet
            data["head_p_kw"] = np.round(net + total, 3).tolist()
        return data


def _rows(a: np.ndarray) -> list[list[float]]:
    """a.tolist(), with equal rows (same bits) as one shared list: a plan's matrices repeat whole
    device rows (PV at 100 %, idle devices), which the historian then encodes once."""
    a = np.ascontiguousarray(a, float)
    seen: dict[bytes, list[float]] = {}
    return [seen.get(k) or seen.setdefault(k, row.tolist()) for k, row in ((r.tobytes(), r) for r in a)]


def _neutral(kind: str, k, g) -> np.ndarray:
    """The value a device of this class holds when the schedule leaves it alone."""
    if kind == "pv":
        return np.full(g.n, 100.0)
    if kind == "ev":
        return k.released(g)
    return np.zeros(g.n)
