"""`Dispatcher`: day-ahead and real-time schedules from a `DispatchProblem`.

Both entry points aggregate devices (aggregate.py), load the numbers into a Pyomo LP
(model.py) and solve it with HiGHS through Pyomo's persistent appsi interface. A model is kept
per slot ("day_ahead", "realtime") together with its solver; when the next problem of that
slot has the same structure (same groups, horizon, grid matrix) only Params and bounds are
rewritten and HiGHS restarts from its previous basis. Each solve logs model size, build/update
and solve time on the `controller.dispatch` logger.
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import ClassVar

import numpy as np
from pyomo.contrib.appsi.base import TerminationCondition
from pyomo.contrib.appsi.solvers import Highs

from controller.dispatch import aggregate as agg
from controller.dispatch import model as lp
from controller.dispatch.problem import DispatchProblem, Schedule, SolveStats

log = logging.getLogger("controller.dispatch")


class DispatchError(RuntimeError):
    """The LP could not be solved (infeasible/unbounded/solver failure); one-line message."""


def _grid_sig(p: DispatchProblem):
    g = p.grid
    if g is None:
        return None
    mats = [np.ascontiguousarray(g.dv_dp_pu_per_kw, float), np.asarray(g.buses, int)]
    if g.dload_dp_pct_per_kw is not None:
        mats.append(np.ascontiguousarray(g.dload_dp_pct_per_kw, float))
    return hashlib.sha1(b"".join(x.tobytes() for x in mats)).hexdigest()


class Dispatcher:
    """Solves dispatch problems. `aggregate=False` gives one LP unit per device (reference).

    day_ahead(problem)  -> Schedule   (typically 96 x 900 s)
    realtime(problem)   -> Schedule   (short horizon, e.g. 24 x 300 s; reuses its model)
    """

    DAY_AHEAD_OPTIONS: ClassVar[dict] = {"solver": "choose"}
    REALTIME_OPTIONS: ClassVar[dict] = {"solver": "simplex"}  # simplex restarts from the previous basis

    def __init__(self, aggregate: bool = True, day_ahead_options: dict | None = None,
                 realtime_options: dict | None = None):
        self.aggregate = aggregate
        self.options = {"day_ahead": dict(day_ahead_options or self.DAY_AHEAD_OPTIONS),
                        "realtime": dict(realtime_options or self.REALTIME_OPTIONS)}
        self._slots: dict[str, tuple] = {}  # slot -> (signature, model, solver)
        self._keys: dict[str, tuple] = {}  # slot -> (device ids, battery keys, EV keys)
        self.last_model = None

    def day_ahead(self, problem: DispatchProblem) -> Schedule:
        return self.solve(problem, "day_ahead")

    def realtime(self, problem: DispatchProblem) -> Schedule:
        return self.solve(problem, "realtime")

    def solve(self, p: DispatchProblem, slot: str = "day_ahead") -> Schedule:
        p.validate()
        t_start = time.perf_counter()
        # keep battery/EV groups stable while the device list is (persistent real-time model)
        ids = tuple(x.device_ids if x is not None else () for x in (p.batteries, p.evs))
        keys = self._keys.get(slot)
        if keys is not None and keys[0] == ids:
            a = agg.aggregate(p, self.aggregate, keys[1], keys[2])
        else:
            a = agg.aggregate(p, self.aggregate)
            self._keys[slot] = (ids, a.bat_dev_keys, a.ev_dev_keys)
        sig = (p.n_steps, float(p.step_s), a.signature(), _grid_sig(p))
        cached = self._slots.get(slot)
        reused = cached is not None and cached[0] == sig
        if reused:
            _, m, opt = cached
            lp.load(m, p, a)
        else:
            m = lp.build(p, a)
            opt = Highs()
            opt.config.stream_solver = False
            opt.config.load_solution = False
            opt.highs_options = {"output_flag": False, **self.options.get(slot, {})}
            opt.set_instance(m)
            self._slots[slot] = (sig, m, opt)
        if reused:  # structure is known not to change: only numbers are pushed to HiGHS
            uc = opt.update_config
            uc.check_for_new_or_removed_constraints = False
            uc.check_for_new_or_removed_vars = False
            uc.check_for_new_or_removed_params = False
            uc.check_for_new_objective = False
            uc.update_constraints = False
            uc.update_named_expressions = False
        build_s = time.perf_counter() - t_start
        t1 = time.perf_counter()
        res = opt.solve(m)
        solve_s = time.perf_counter() - t1
        tc = res.termination_condition
        if tc != TerminationCondition.optimal:
            raise DispatchError(f"dispatch {slot}: HiGHS returned {tc.name} "
                                f"({len(a.bat.keys)} battery / {len(a.ev.keys)} EV groups, "
                                f"{p.n_steps} steps)")
        res.solution_loader.load_vars()
        self.last_model = m
        hs = opt._solver_model  # highspy.Highs behind appsi
        stats = SolveStats("optimal", int(hs.getNumCol()), int(hs.getNumRow()), build_s, solve_s,
                           a.n_groups, _n_devices(p), reused)
        sched = self._schedule(p, a, m, stats)
        log.info("dispatch %s: %d vars, %d cons, %d groups / %d devices, build %.3f s, solve %.3f s,"
                 " reused=%s, objective %.2f EUR", slot, stats.variables, stats.constraints,
                 stats.n_groups, stats.n_devices, build_s, solve_s, reused, sched.objective_eur)
        return sched

    def _schedule(self, p: DispatchProblem, a: agg.Aggregated, m, stats: SolveStats) -> Schedule:
        n, dt_h, w = p.n_steps, p.step_h, p.weights
        V = lambda var, k: lp.values(var, (k, n))
        head = np.array([m.head[t].value for t in range(n)])
        d = lp.numbers(p, a)
        p_kw: dict[str, np.ndarray] = {}
        soc_kwh: dict[str, np.ndarray] = {}
        setpoints: list[tuple[str, str, float]] = []
        residual = 0.0
        terms = {"energy_eur": float(d["c_head"] @ head)}

        nb = len(a.bat.keys)
        ch, dis = V(m.ch, nb), V(m.dis, nb)
        terms["degradation_eur"] = float(((a.bat.deg * dt_h)[:, None] * (ch + dis)).sum())
        terms["soc_end_penalty_eur"] = w.soc_end_eur_per_kwh * sum(m.soc_short[g].value for g in range(nb))
        if nb:
            pd_, soc, r = agg.disaggregate_batteries(p, a.bat, ch - dis)
            residual += r
            for i, dev in enumerate(p.batteries.device_ids):
                p_kw[dev], soc_kwh[dev] = pd_[i], soc[i]
                setpoints.append((dev, "p_set_kw", float(pd_[i, 0])))

        nv = len(a.pv.keys)
        cur_g = V(m.cur, nv)
        terms["pv_curtail_penalty_eur"] = float(d["w_pv"] * cur_g.sum())
        if nv:
            cur = agg.disaggregate_pv(p, a.pv, cur_g)
            avail = np.maximum(np.asarray(p.pv.p_avail_kw, float), 0.0)
            rated = (avail.max(axis=1) if p.pv.s_rated_kva is None
                     else np.asarray(p.pv.s_rated_kva, float))
            for i, dev in enumerate(p.pv.device_ids):
                p_kw[dev] = -(avail[i] - cur[i])
                pct = 100.0 if cur[i, 0] <= 1e-6 or rated[i] <= 0 else 100.0 * (avail[i, 0] - cur[i, 0]) / rated[i]
                setpoints.append((dev, "p_limit_pct", float(np.clip(pct, 0.0, 100.0))))

        ne = len(a.ev.keys)
        pev = V(m.pev, ne)
        terms["ev_unmet_penalty_eur"] = w.ev_unmet_eur_per_kwh * sum(m.unmet[e].value for e in range(ne))
        if ne:
            pd_, _, r = agg.disaggregate_evs(p, a.ev, pev)
            residual += r
            for i, dev in enumerate(p.evs.device_ids):
                p_kw[dev] = pd_[i]
                if p.evs.connected[i]:
                    setpoints.append((dev, "p_max_set_kw", float(pd_[i, 0])))

        nh = len(a.tcl.keys)
        ptcl = V(m.ptcl, nh)
        terms["tcl_end_penalty_eur"] = w.tcl_end_eur_per_kwh * sum(m.tcl_short[h].value for h in range(nh))
        for h, t in enumerate(p.tcls):
            p_kw[f"{t.name}/*"] = ptcl[h]
            setpoints.append((f"{t.name}/*", "p_target_kw", float(ptcl[h, 0])))

        nf = len(a.flex.keys)
        cut_g, pay_g = V(m.cut, nf), V(m.pay, nf)
        terms["flex_discomfort_eur"] = float(d["w_flex"] * cut_g.sum())
        terms["flex_owed_value_eur"] = float(d["c_owed"] * sum(m.owed[f, n - 1].value for f in range(nf)))
        if nf:
            cut, pay = agg.disaggregate_flex(p, a.flex, cut_g, pay_g)
            base = np.asarray(p.flex.p_base_kw, float)
            for i, dev in enumerate(p.flex.device_ids):
                p_kw[dev] = base[i] - cut[i] + pay[i]
                cm = a.flex.dev_cut_max[i, 0]
                setpoints.append((dev, "curtail_pct", float(100.0 * cut[i, 0] / cm) if cm > 1e-9 else 0.0))

        dr_short = np.array([m.dr_short[t].value for t in range(n)])
        over = np.array([m.over[t].value for t in range(n)])
        terms["dr_penalty_eur"] = float(d["w_dr"] * dr_short.sum())
        terms["peak_eur"] = float(d["w_peak"] * m.peak.value)
        terms["peak_limit_penalty_eur"] = float(d["w_over"] * over.sum())
        terms["export_limit_penalty_eur"] = float(d["w_export"] * sum(m.under[t].value for t in range(n)))
        if p.grid is not None:
            terms["grid_penalty_eur"] = float(d["w_grid"] * (sum(x.value for x in m.sv.values())
                                                             + sum(x.value for x in m.sl.values())))
        has_dr = p.dr_reduction_kw is not None and np.isfinite(p.dr_reduction_kw).any()
        return Schedule(p.t0, p.step_s, p_kw, head, soc_kwh, terms, stats, setpoints,
                        dr_short if has_dr else None, residual)


def _n_devices(p: DispatchProblem) -> int:
    return sum(x.n for x in (p.batteries, p.pv, p.evs, p.flex) if x is not None) + len(p.tcls)
