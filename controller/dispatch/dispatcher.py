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


class _Highs(Highs):
    """appsi's persistent HiGHS interface for a model whose structure never changes after
    set_instance. With `bulk` set, Columns.push has already written the new numbers into HiGHS,
    so update() has nothing to find (appsi's own pass rebuilds its row/column maps even when
    nothing was removed)."""

    bulk = False

    def update(self, timer=None):
        if not self.bulk:
            super().update(timer)

    def _solve(self, timer):
        """appsi's _solve, without its console capture when HiGHS prints nothing (output_flag
        off, no stream, no log file): the capture (fd redirection, pipes, a reader thread) took
        ~1 ms per re-solve, about half of what the warm-started LP itself takes."""
        cfg, h = self.config, self._solver_model
        if not self.bulk or cfg.stream_solver or cfg.logfile or self.highs_options.get("output_flag", True):
            return super()._solve(timer)
        h.setOptionValue("log_to_console", True)  # the same option writes as appsi's, same order
        if cfg.time_limit is not None:
            h.setOptionValue("time_limit", cfg.time_limit)
        if cfg.mip_gap is not None:
            h.setOptionValue("mip_rel_gap", cfg.mip_gap)
        for key, option in self.highs_options.items():
            h.setOptionValue(key, option)
        if cfg.warmstart:
            self._warm_start()
        timer.start("optimize")
        if self.version()[:2] >= (1, 8):
            h.HandleKeyboardInterrupt = True
        h.run()
        timer.stop("optimize")
        return self._postsolve(timer)


class Dispatcher:
    """Solves dispatch problems. `aggregate=False` gives one LP unit per device (reference);
    `bulk_update=False` re-solves through Pyomo Params and appsi's update() (reference path).

    day_ahead(problem)  -> Schedule   (typically 96 x 900 s)
    realtime(problem)   -> Schedule   (short horizon, e.g. 24 x 300 s; reuses its model)
    """

    DAY_AHEAD_OPTIONS: ClassVar[dict] = {"solver": "choose"}
    REALTIME_OPTIONS: ClassVar[dict] = {"solver": "simplex"}  # simplex restarts from the previous basis

    def __init__(self, aggregate: bool = True, day_ahead_options: dict | None = None,
                 realtime_options: dict | None = None, bulk_update: bool = True):
        self.aggregate = aggregate
        self.bulk_update = bulk_update  # False: re-solves go through Params + appsi's update()
        self.options = {"day_ahead": dict(day_ahead_options or self.DAY_AHEAD_OPTIONS),
                        "realtime": dict(realtime_options or self.REALTIME_OPTIONS)}
        self._slots: dict[str, tuple] = {}  # slot -> (signature, model, solver, Columns, bulk)
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
        d = lp.numbers(p, a)
        cached = self._slots.get(slot)
        reused = cached is not None and cached[0] == sig
        if reused:
            _, m, opt, cols, bulk = cached
            if bulk:  # numbers straight into HiGHS as arrays; appsi's update() has nothing to do
                cols.push(opt._solver_model, p, a, d)
            else:
                lp.load(m, p, a)
        else:
            m = lp.build(p, a)
            opt = _Highs()
            opt.config.stream_solver = False
            opt.config.load_solution = False
            opt.highs_options = {"output_flag": False, **self.options.get(slot, {})}
            opt.set_instance(m)
            cols = lp.Columns(m, opt)
            bulk = self.bulk_update and cols.matches(opt, p, a, d)
            if self.bulk_update and not bulk:  # a model change that Columns does not know: appsi's update() instead
                log.warning("dispatch %s: bulk update does not match the model; using appsi update()", slot)
            _quiet_update(opt.update_config)
            opt.bulk = bulk
            self._slots[slot] = (sig, m, opt, cols, bulk)
        build_s = time.perf_counter() - t_start
        t1 = time.perf_counter()
        res = opt.solve(m)
        solve_s = time.perf_counter() - t1
        tc = res.termination_condition
        if tc != TerminationCondition.optimal:
            raise DispatchError(f"dispatch {slot}: HiGHS returned {tc.name} "
                                f"({len(a.bat.keys)} battery / {len(a.ev.keys)} EV groups, "
                                f"{p.n_steps} steps)")
        self.last_model = m  # structure (and the numbers of its first problem); values: Schedule
        hs = opt._solver_model  # highspy.Highs behind appsi
        x = np.asarray(opt._sol.col_value, float)  # the solution appsi fetched, by HiGHS column
        stats = SolveStats("optimal", int(hs.getNumCol()), int(hs.getNumRow()), build_s, solve_s,
                           a.n_groups, _n_devices(p), reused)
        sched = self._schedule(p, a, x, cols, d, stats)
        log.info("dispatch %s: %d vars, %d cons, %d groups / %d devices, build %.3f s, solve %.3f s,"
                 " reused=%s, objective %.2f EUR", slot, stats.variables, stats.constraints,
                 stats.n_groups, stats.n_devices, build_s, solve_s, reused, sched.objective_eur)
        return sched

    def _schedule(self, p: DispatchProblem, a: agg.Aggregated, x: np.ndarray, cols: lp.Columns, d: dict,
                  stats: SolveStats) -> Schedule:
        n, dt_h, w = p.n_steps, p.step_h, p.weights
        get = lambda name: cols.get(x, name)
        V = lambda name: get(name) + 0.0  # -0.0 reads as 0.0, as Pyomo's `v.value or 0.0` did
        total = lambda name: sum(get(name).ravel().tolist())  # left to right, as summing Pyomo values did
        head = get("head")
        p_kw: dict[str, np.ndarray] = {}
        soc_kwh: dict[str, np.ndarray] = {}
        setpoints: list[tuple[str, str, float]] = []
        residual = 0.0
        terms = {"energy_eur": float(d["c_head"] @ head)}

        nb = len(a.bat.keys)
        ch, dis = V("ch"), V("dis")
        terms["degradation_eur"] = float(((a.bat.deg * dt_h)[:, None] * (ch + dis)).sum())
        terms["soc_end_penalty_eur"] = w.soc_end_eur_per_kwh * total("soc_short")
        if nb:
            pd_, soc, r = agg.disaggregate_batteries(p, a.bat, ch - dis)
            residual += r
            ids = p.batteries.device_ids
            p_kw.update(zip(ids, pd_))
            soc_kwh.update(zip(ids, soc))
            setpoints += [(dev, "p_set_kw", v) for dev, v in zip(ids, pd_[:, 0].tolist())]

        nv = len(a.pv.keys)
        cur_g = V("cur")
        terms["pv_curtail_penalty_eur"] = float(d["w_pv"] * cur_g.sum())
        if nv:
            cur = agg.disaggregate_pv(p, a.pv, cur_g)
            avail = np.maximum(np.asarray(p.pv.p_avail_kw, float), 0.0)
            rated = (avail.max(axis=1) if p.pv.s_rated_kva is None
                     else np.asarray(p.pv.s_rated_kva, float))
            p_kw.update(zip(p.pv.device_ids, -(avail - cur)))
            with np.errstate(divide="ignore", invalid="ignore"):
                pct = np.where((cur[:, 0] <= 1e-6) | (rated <= 0), 100.0,
                               100.0 * (avail[:, 0] - cur[:, 0]) / rated)
            setpoints += [(dev, "p_limit_pct", v) for dev, v in zip(p.pv.device_ids,
                                                                      np.clip(pct, 0.0, 100.0).tolist())]

        ne = len(a.ev.keys)
        pev = V("pev")
        terms["ev_unmet_penalty_eur"] = w.ev_unmet_eur_per_kwh * total("unmet")
        if ne:
            pd_, _, r = agg.disaggregate_evs(p, a.ev, pev)
            residual += r
            p_kw.update(zip(p.evs.device_ids, pd_))
            setpoints += [(dev, "p_max_set_kw", v) for dev, v, c in
                          zip(p.evs.device_ids, pd_[:, 0].tolist(), p.evs.connected) if c]

        nh = len(a.tcl.keys)
        ptcl = V("ptcl")
        terms["tcl_end_penalty_eur"] = w.tcl_end_eur_per_kwh * total("tcl_short")
        for h, t in enumerate(p.tcls):
            p_kw[f"{t.name}/*"] = ptcl[h]
            setpoints.append((f"{t.name}/*", "p_target_kw", float(ptcl[h, 0])))

        nf = len(a.flex.keys)
        cut_g, pay_g = V("cut"), V("pay")
        terms["flex_discomfort_eur"] = float(d["w_flex"] * cut_g.sum())
        terms["flex_owed_value_eur"] = float(d["c_owed"] * sum(get("owed")[:, n - 1].tolist()))
        if nf:
            cut, pay = agg.disaggregate_flex(p, a.flex, cut_g, pay_g)
            base = np.asarray(p.flex.p_base_kw, float)
            p_kw.update(zip(p.flex.device_ids, base - cut + pay))
            cm = a.flex.dev_cut_max[:, 0]
            with np.errstate(divide="ignore", invalid="ignore"):
                pct = np.where(cm > 1e-9, 100.0 * cut[:, 0] / cm, 0.0)
            setpoints += [(dev, "curtail_pct", v) for dev, v in zip(p.flex.device_ids, pct.tolist())]

        dr_short = get("dr_short")
        terms["dr_penalty_eur"] = float(d["w_dr"] * dr_short.sum())
        terms["peak_eur"] = float(d["w_peak"] * get("peak")[0])
        terms["peak_limit_penalty_eur"] = float(d["w_over"] * get("over").sum())
        terms["export_limit_penalty_eur"] = float(d["w_export"] * total("under"))
        if p.grid is not None:
            terms["grid_penalty_eur"] = float(d["w_grid"] * (total("sv") + total("sl")))
        has_dr = p.dr_reduction_kw is not None and np.isfinite(p.dr_reduction_kw).any()
        return Schedule(p.t0, p.step_s, p_kw, head, soc_kwh, terms, stats, setpoints,
                        dr_short if has_dr else None, residual)


def _quiet_update(uc) -> None:
    """A new structure is a new model: appsi's update() looks for no added/removed components."""
    uc.check_for_new_or_removed_constraints = False
    uc.check_for_new_or_removed_vars = False
    uc.check_for_new_or_removed_params = False
    uc.check_for_new_objective = False
    uc.update_constraints = False
    uc.update_named_expressions = False


def _n_devices(p: DispatchProblem) -> int:
    return sum(x.n for x in (p.batteries, p.pv, p.evs, p.flex) if x is not None) + len(p.tcls)
