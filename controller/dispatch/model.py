"""The dispatch LP as a Pyomo model whose numbers are mutable Params and variable bounds, so
one built model can be re-solved with new data (real-time loop) through HiGHS's persistent
appsi interface, which keeps the simplex basis between solves (warm start).

Index sets: one unit per aggregated group (see aggregate.py) and one column per time step.
Variables: battery ch/dis/soc, PV curtailment, EV charging and cumulative energy, TCL power and
energy, flexible-load cut/payback/owed, feeder head power, and non-negative slacks that keep
the LP feasible (DR shortfall, peak-limit excess, EV unmet energy, end-of-horizon SOC/TCL
energy, voltage/loading excess), each priced in the objective by Weights.
"""

from __future__ import annotations

import numpy as np
import pyomo.environ as pyo

from controller.dispatch.aggregate import Aggregated
from controller.dispatch.problem import DispatchProblem

BIG = 1e9  # "no bound" for targets that are absent at a step
FLEX_GUARD_H = 1.0  # no flexible-load cut this long before a reserved (DR) window
TIE_EUR_PER_KWH = 1e-4  # below any price step that matters
SCALARS = ("peak_limit", "export_limit", "c_owed", "w_dr", "w_peak", "w_over", "w_export", "w_flex",
           "w_pv", "w_ev", "w_soc", "w_tcl", "w_grid")


def _grid_rows(p: DispatchProblem, a: Aggregated):
    """Constant (non-dispatchable) bus injections implied by the data, (n_b, n)."""
    g = p.grid
    const = np.zeros((len(g.buses), p.n_steps))
    col = {int(b): i for i, b in enumerate(np.asarray(g.buses, int))}
    for gi, b in enumerate(a.pv.bus):
        if int(b) in col:
            const[col[int(b)]] -= a.pv.avail[gi]
    for gi, b in enumerate(a.flex.bus):
        if int(b) in col:
            const[col[int(b)]] += a.flex.base[gi]
    return col, const


def numbers(p: DispatchProblem, a: Aggregated) -> dict:
    """Every number of the LP that may change between solves of the same structure."""
    n, dt_h, w = p.n_steps, p.step_h, p.weights
    prices = np.asarray(p.prices_eur_per_mwh, float)
    head_rhs = (np.asarray(p.net_load_forecast_kw, float) - a.pv.avail.sum(axis=0)
                + a.flex.base.sum(axis=0))
    target = np.full(n, BIG)
    if p.dr_reduction_kw is not None:
        red = np.asarray(p.dr_reduction_kw, float)
        on = np.isfinite(red)
        target[on] = np.asarray(p.dr_baseline_kw, float)[on] - red[on]
    d = {"c_head": w.energy * prices * dt_h / 1000.0, "head_rhs": head_rhs, "dr_target": target,
         "peak_limit": BIG if p.peak_limit_kw is None else float(p.peak_limit_kw),
         "export_limit": BIG if p.export_limit_kw is None else float(p.export_limit_kw),
         "w_export": w.export_limit_eur_per_kwh * dt_h,
         "c_owed": (max(float(np.mean(prices)), 0.0) / 1000.0 if w.flex_owed_end_eur_per_kwh is None
                    else float(w.flex_owed_end_eur_per_kwh)),
         "w_dr": w.dr_shortfall_eur_per_kwh * dt_h, "w_peak": w.peak_eur_per_kw,
         "w_over": w.peak_limit_eur_per_kwh * dt_h, "w_flex": w.flex_eur_per_kwh * dt_h,
         "w_pv": w.pv_curtail_eur_per_kwh * dt_h, "w_ev": w.ev_unmet_eur_per_kwh,
         "w_soc": w.soc_end_eur_per_kwh, "w_tcl": w.tcl_end_eur_per_kwh, "w_grid": w.grid_eur_per_unit}
    if p.grid is not None:
        g = p.grid
        _, const = _grid_rows(p, a)
        S = np.asarray(g.dv_dp_pu_per_kw, float)
        v0 = np.asarray(g.v0_pu, float) + S @ const
        d["v_lo"], d["v_hi"] = g.v_min_pu - v0, g.v_max_pu - v0
        if g.dload_dp_pct_per_kw is not None:
            L = np.asarray(g.dload_dp_pct_per_kw, float)
            d["l_hi"] = g.loading_max_pct - (np.asarray(g.loading0_pct, float) + L @ const)
    return d


def build(p: DispatchProblem, a: Aggregated) -> pyo.ConcreteModel:
    """Build the LP for this structure; numbers are loaded by `load(m, p, a)`."""
    n, dt_h = p.n_steps, p.step_h
    m = pyo.ConcreteModel("dispatch")
    T = range(n)
    m.T = pyo.Set(initialize=T, ordered=True)
    m.B = pyo.Set(initialize=range(len(a.bat.keys)))
    m.V = pyo.Set(initialize=range(len(a.pv.keys)))
    m.E = pyo.Set(initialize=range(len(a.ev.keys)))
    m.H = pyo.Set(initialize=range(len(a.tcl.keys)))
    m.F = pyo.Set(initialize=range(len(a.flex.keys)))
    mut = {"mutable": True, "initialize": 0.0}
    for name in ("c_head", "head_rhs", "dr_target"):
        setattr(m, name, pyo.Param(m.T, **mut))
    for name in SCALARS:
        setattr(m, name, pyo.Param(**mut))
    m.soc0 = pyo.Param(m.B, **mut)
    m.soc_end = pyo.Param(m.B, **mut)
    m.ev_lo = pyo.Param(m.E, m.T, **mut)
    m.tcl_rhs = pyo.Param(m.H, m.T, **mut)
    m.tcl_e0 = pyo.Param(m.H, **mut)
    m.tcl_base = pyo.Param(m.H, m.T, **mut)
    m.owed0 = pyo.Param(m.F, **mut)

    nn = pyo.NonNegativeReals
    m.ch = pyo.Var(m.B, m.T, within=nn)
    m.dis = pyo.Var(m.B, m.T, within=nn)
    m.soc = pyo.Var(m.B, m.T)
    m.soc_short = pyo.Var(m.B, within=nn)
    m.cur = pyo.Var(m.V, m.T, within=nn)
    m.pev = pyo.Var(m.E, m.T, within=nn)
    m.cum = pyo.Var(m.E, m.T, within=nn)
    m.unmet = pyo.Var(m.E, within=nn)
    m.ptcl = pyo.Var(m.H, m.T)
    m.etcl = pyo.Var(m.H, m.T)
    m.tcl_short = pyo.Var(m.H, within=nn)
    m.tcl_up = pyo.Var(m.H, m.T, within=nn)  # |p - baseline|, for the tie-breaker
    m.tcl_dn = pyo.Var(m.H, m.T, within=nn)
    m.cut = pyo.Var(m.F, m.T, within=nn)
    m.pay = pyo.Var(m.F, m.T, within=nn)
    m.owed = pyo.Var(m.F, m.T, within=nn)
    m.head = pyo.Var(m.T)
    m.peak = pyo.Var()
    m.over = pyo.Var(m.T, within=nn)
    m.under = pyo.Var(m.T, within=nn)  # export beyond the export limit
    m.dr_short = pyo.Var(m.T, within=nn)

    ec, ed = a.bat.eta_ch, a.bat.eta_dis

    def soc_rule(m, g, t):
        prev = m.soc0[g] if t == 0 else m.soc[g, t - 1]
        return m.soc[g, t] == prev + (ec[g] * dt_h) * m.ch[g, t] - (dt_h / ed[g]) * m.dis[g, t]
    m.soc_dyn = pyo.Constraint(m.B, m.T, rule=soc_rule)
    m.soc_final = pyo.Constraint(m.B, rule=lambda m, g: m.soc[g, n - 1] + m.soc_short[g] >= m.soc_end[g])

    ev_eta = a.ev.eta

    def cum_rule(m, g, t):
        prev = 0.0 if t == 0 else m.cum[g, t - 1]
        return m.cum[g, t] == prev + (ev_eta[g] * dt_h) * m.pev[g, t]
    m.ev_cum = pyo.Constraint(m.E, m.T, rule=cum_rule)
    m.ev_need = pyo.Constraint(m.E, m.T, rule=lambda m, g, t: m.cum[g, t] + m.unmet[g] >= m.ev_lo[g, t])

    def tcl_rule(m, h, t):
        prev = m.tcl_e0[h] if t == 0 else m.etcl[h, t - 1]
        return m.etcl[h, t] - prev - dt_h * m.ptcl[h, t] == m.tcl_rhs[h, t]
    m.tcl_dyn = pyo.Constraint(m.H, m.T, rule=tcl_rule)
    m.tcl_final = pyo.Constraint(m.H, rule=lambda m, h: m.etcl[h, n - 1] + m.tcl_short[h] >= m.tcl_e0[h])
    m.tcl_dev = pyo.Constraint(m.H, m.T, rule=lambda m, h, t: m.ptcl[h, t] - m.tcl_up[h, t] + m.tcl_dn[h, t]
                               == m.tcl_base[h, t])

    reb = a.flex.rebound

    def owed_rule(m, f, t):
        prev = m.owed0[f] if t == 0 else m.owed[f, t - 1]
        return m.owed[f, t] == prev + (reb[f] * dt_h) * m.cut[f, t] - dt_h * m.pay[f, t]
    m.flex_owed = pyo.Constraint(m.F, m.T, rule=owed_rule)

    def head_rule(m, t):
        return (m.head[t] - sum(m.ch[g, t] - m.dis[g, t] for g in m.B) - sum(m.cur[v, t] for v in m.V)
                - sum(m.pev[e, t] for e in m.E) - sum(m.ptcl[h, t] for h in m.H)
                - sum(m.pay[f, t] - m.cut[f, t] for f in m.F) == m.head_rhs[t])
    m.head_def = pyo.Constraint(m.T, rule=head_rule)
    m.peak_def = pyo.Constraint(m.T, rule=lambda m, t: m.peak >= m.head[t])
    m.over_def = pyo.Constraint(m.T, rule=lambda m, t: m.head[t] - m.over[t] <= m.peak_limit)
    m.under_def = pyo.Constraint(m.T, rule=lambda m, t: m.head[t] + m.under[t] >= -m.export_limit)
    m.dr_def = pyo.Constraint(m.T, rule=lambda m, t: m.head[t] - m.dr_short[t] <= m.dr_target[t])

    obj = (sum(m.c_head[t] * m.head[t] + m.w_dr * m.dr_short[t] + m.w_over * m.over[t]
               + m.w_export * m.under[t] for t in m.T)
           + m.w_peak * m.peak)
    deg = a.bat.deg * dt_h
    obj += sum(deg[g] * (m.ch[g, t] + m.dis[g, t]) for g in m.B for t in m.T if deg[g] != 0)
    obj += m.w_soc * sum(m.soc_short[g] for g in m.B)
    obj += m.w_pv * sum(m.cur[v, t] for v in m.V for t in m.T)
    obj += m.w_ev * sum(m.unmet[e] for e in m.E)
    obj += m.w_tcl * sum(m.tcl_short[h] for h in m.H)
    # tie-breakers (flat prices): TCLs stay at their baseline, EVs charge early
    obj += TIE_EUR_PER_KWH * dt_h * sum(m.tcl_up[h, t] + m.tcl_dn[h, t] for h in m.H for t in m.T)
    obj += sum(TIE_EUR_PER_KWH * dt_h * (t + 1) / n * m.pev[e, t] for e in m.E for t in m.T)
    obj += m.w_flex * sum(m.cut[f, t] for f in m.F for t in m.T)
    obj += m.c_owed * sum(m.owed[f, n - 1] for f in m.F)

    if p.grid is not None:
        _add_grid(m, p, a)
        obj += m.w_grid * (sum(m.sv[i, t] for i in m.M for t in m.T)
                           + sum(m.sl[i, t] for i in m.L for t in m.T))
    m.obj = pyo.Objective(expr=obj, sense=pyo.minimize)
    load(m, p, a)
    return m


def _add_grid(m, p: DispatchProblem, a: Aggregated) -> None:
    g = p.grid
    col, _ = _grid_rows(p, a)
    terms: dict[int, list] = {}  # bus column -> [(sign, var-indexer)]

    def add(bus, comp, idx, sign):
        if int(bus) in col:
            terms.setdefault(col[int(bus)], []).append((sign, comp, idx))
    for i, b in enumerate(a.bat.bus):
        add(b, m.ch, i, 1.0)
        add(b, m.dis, i, -1.0)
    for i, b in enumerate(a.pv.bus):
        add(b, m.cur, i, 1.0)
    for i, b in enumerate(a.ev.bus):
        add(b, m.pev, i, 1.0)
    for i, b in enumerate(a.tcl.bus):
        add(b, m.ptcl, i, 1.0)
    for i, b in enumerate(a.flex.bus):
        add(b, m.pay, i, 1.0)
        add(b, m.cut, i, -1.0)

    def flow(S_row, t):
        return sum(float(S_row[c]) * s * comp[i, t] for c, lst in terms.items() if S_row[c] != 0
                   for s, comp, i in lst)
    S = np.asarray(g.dv_dp_pu_per_kw, float)
    m.M = pyo.Set(initialize=range(S.shape[0]))
    m.v_lo = pyo.Param(m.M, m.T, mutable=True, initialize=0.0)
    m.v_hi = pyo.Param(m.M, m.T, mutable=True, initialize=0.0)
    m.sv = pyo.Var(m.M, m.T, within=pyo.NonNegativeReals)
    m.v_low = pyo.Constraint(m.M, m.T, rule=lambda m, i, t: flow(S[i], t) + m.sv[i, t] >= m.v_lo[i, t])
    m.v_high = pyo.Constraint(m.M, m.T, rule=lambda m, i, t: flow(S[i], t) - m.sv[i, t] <= m.v_hi[i, t])
    L = (np.zeros((0, S.shape[1])) if g.dload_dp_pct_per_kw is None
         else np.asarray(g.dload_dp_pct_per_kw, float))
    m.L = pyo.Set(initialize=range(L.shape[0]))
    m.l_hi = pyo.Param(m.L, m.T, mutable=True, initialize=0.0)
    m.sl = pyo.Var(m.L, m.T, within=pyo.NonNegativeReals)
    m.l_high = pyo.Constraint(m.L, m.T, rule=lambda m, i, t: flow(L[i], t) - m.sl[i, t] <= m.l_hi[i, t])


def _set_param(param, values: np.ndarray) -> None:
    if values.ndim == 1:
        for i, x in enumerate(values):
            param[i] = float(x)
    else:
        for i in range(values.shape[0]):
            for t in range(values.shape[1]):
                param[i, t] = float(values[i, t])


def _bounds(var, lo, hi) -> None:
    """Set bounds of an indexed (g, t) var from arrays broadcastable to (g, n)."""
    for (g, t), v in var.items():
        if lo is not None:
            v.setlb(float(lo[g, t] if np.ndim(lo) == 2 else lo[g]))
        if hi is not None:
            v.setub(float(hi[g, t] if np.ndim(hi) == 2 else hi[g]))


def load(m: pyo.ConcreteModel, p: DispatchProblem, a: Aggregated) -> None:
    """Write this problem's numbers into a model of the same structure (in place)."""
    d = numbers(p, a)
    for name in ("c_head", "head_rhs", "dr_target"):
        _set_param(getattr(m, name), d[name])
    for name in SCALARS:
        getattr(m, name).set_value(float(d[name]))
    _set_param(m.soc0, a.bat.soc0)
    _set_param(m.soc_end, a.bat.soc_end)
    r = _reserve(p, a)
    _bounds(m.ch, None, r["bat_p"])
    _bounds(m.dis, None, r["bat_p"])
    _bounds(m.soc, r["soc_lo"], a.bat.soc_max)
    _bounds(m.cur, None, a.pv.avail)
    _bounds(m.pev, None, a.ev.p_max)
    _bounds(m.cum, None, a.ev.e_hi)
    _set_param(m.ev_lo, a.ev.e_lo)
    _bounds(m.ptcl, r["tcl_lo"], r["tcl_hi"])
    _bounds(m.etcl, a.tcl.e_min, a.tcl.e_max)
    _set_param(m.tcl_rhs, -p.step_h * a.tcl.p_base)
    _set_param(m.tcl_e0, a.tcl.e0)
    _set_param(m.tcl_base, a.tcl.p_base)
    _bounds(m.cut, None, r["cut"])
    _bounds(m.pay, None, a.flex.pay_max)
    _set_param(m.owed0, a.flex.owed0)
    if p.grid is not None:
        _set_param(m.v_lo, d["v_lo"])
        _set_param(m.v_hi, d["v_hi"])
        if "l_hi" in d:
            _set_param(m.l_hi, d["l_hi"])


def _reserve(p: DispatchProblem, a: Aggregated) -> dict:
    """Bounds with the DR reserve (`p.reserve_steps`): no battery power, no flexible-load cut
    and TCLs at baseline inside the window; battery SOC before and inside it high enough to
    discharge at full power until the window ends."""
    n = p.n_steps
    nb = len(a.bat.keys)
    out = {"bat_p": a.bat.p_max, "soc_lo": a.bat.soc_min, "cut": a.flex.cut_max,
           "tcl_lo": a.tcl.p_min, "tcl_hi": a.tcl.p_max}
    mask = None if p.reserve_steps is None else np.asarray(p.reserve_steps, bool)
    if mask is None or not mask.any():
        return out
    out["bat_p"] = np.where(mask[None, :], 0.0, np.broadcast_to(a.bat.p_max[:, None], (nb, n)))
    # energy still to be delivered from the end of step k to the end of its window
    left_h = np.zeros(n)
    for k in range(n - 1, -1, -1):
        nxt = left_h[k + 1] if k + 1 < n else 0.0
        left_h[k] = (nxt + p.step_h) if (k + 1 < n and mask[k + 1]) else 0.0
    need = a.bat.p_max[:, None] * left_h[None, :] / np.maximum(a.bat.eta_dis[:, None], 1e-6)
    reach = a.bat.soc0[:, None] + np.cumsum(a.bat.eta_ch[:, None] * out["bat_p"] * p.step_h, axis=1)
    out["soc_lo"] = np.minimum(np.minimum(a.bat.soc_min[:, None] + need, a.bat.soc_max[:, None]), reach)
    # a curtailed load pays back as soon as it is released: no cut in the hour before either,
    # or the payback would land in the window and eat the DR program's reduction
    guard = int(np.ceil(FLEX_GUARD_H / p.step_h))
    flex_mask = mask.copy()
    for k in np.flatnonzero(mask):
        flex_mask[max(k - guard, 0):k] = True
    out["cut"] = np.where(flex_mask[None, :], 0.0, a.flex.cut_max)
    base = np.clip(a.tcl.p_base, a.tcl.p_min, a.tcl.p_max)
    out["tcl_lo"] = np.where(mask[None, :], base, a.tcl.p_min)
    out["tcl_hi"] = np.where(mask[None, :], base, a.tcl.p_max)
    return out


def _cols(var, vmap: dict, n: int) -> np.ndarray:
    """HiGHS column of each element of `var`: (k, n) for (group, t) vars, (k,) for 1-D ones."""
    idx = np.fromiter((vmap[id(v)] for v in var.values()), np.int64, len(var))
    return idx.reshape(-1, n) if _two_d(var) else idx


def _rows(con, cmap: dict, n: int) -> np.ndarray:
    idx = np.fromiter((cmap[c] for c in con.values()), np.int64, len(con))
    return idx.reshape(-1, n) if _two_d(con) else idx


def _two_d(comp) -> bool:  # indexed by (group, t); dim() is unknown over an empty group set
    return len(list(comp.index_set().subsets())) == 2


def _full(x, shape) -> np.ndarray:
    x = np.asarray(x, float)
    return np.broadcast_to(x[:, None] if x.ndim == 1 and len(shape) == 2 else x, shape).ravel()


class Columns:
    """Where the model's variables and number-carrying rows sit in the persistent HiGHS model
    (from appsi's maps, once per built model), so that a new problem of the same structure is
    pushed as whole arrays (`push`: one changeColsBounds, changeRowsBounds and changeColsCost
    call) instead of Pyomo Params and per-variable bounds that appsi's update() re-evaluates and
    sends one element at a time, and the solution is read back by column index (`get`).

    `push` writes exactly the numbers `load` + appsi's update() would (same float arithmetic);
    `matches(opt)` checks that against the HiGHS model right after set_instance (built from
    `load`'s numbers) and that the rows/costs it writes are exactly those appsi marked mutable.
    Reads appsi's bookkeeping (`_pyomo_var_to_solver_var_map`, `_pyomo_con_to_solver_con_map`,
    `_vars`, `_mutable_helpers`, `_objective_helpers`; pyomo 6.10): tests/test_dispatch.py fails
    loudly if a pyomo upgrade changes them."""

    VARS = ("ch", "dis", "soc", "soc_short", "cur", "pev", "cum", "unmet", "ptcl", "etcl", "tcl_short",
            "cut", "pay", "owed", "head", "over", "under", "dr_short")

    def __init__(self, m: pyo.ConcreteModel, opt):
        vmap, cmap = opt._pyomo_var_to_solver_var_map, opt._pyomo_con_to_solver_con_map
        n = self.n = len(m.T)
        self.c = {k: _cols(getattr(m, k), vmap, n) for k in self.VARS}
        self.c["peak"] = np.array([vmap[id(m.peak)]], np.int64)
        self.grid = hasattr(m, "M")
        if self.grid:
            self.c["sv"], self.c["sl"] = _cols(m.sv, vmap, n), _cols(m.sl, vmap, n)
        r = {k: _rows(getattr(m, k), cmap, n) for k in
             ("soc_dyn", "soc_final", "ev_need", "tcl_dyn", "tcl_final", "tcl_dev", "flex_owed",
              "head_def", "over_def", "under_def", "dr_def")}
        if self.grid:
            r.update(v_low=_rows(m.v_low, cmap, n), v_high=_rows(m.v_high, cmap, n),
                     l_high=_rows(m.l_high, cmap, n))
        self.r = r

    def get(self, x: np.ndarray, name: str) -> np.ndarray:
        """Values of a variable from the solver's column values (`x`)."""
        return x[self.c[name]]

    def numbers(self, p: DispatchProblem, a: Aggregated, d: dict):
        """(columns, lower, upper), (rows, lower, upper), (cost columns, costs) of this problem."""
        inf, n, c, r = np.inf, self.n, self.c, self.r
        res = _reserve(p, a)
        cols, clo, chi = [], [], []

        def bound(name, lo, hi):
            idx = c[name]
            cols.append(idx.ravel())
            clo.append(np.zeros(idx.size) if lo is None else _full(lo, idx.shape))
            chi.append(_full(hi, idx.shape))
        bound("ch", None, res["bat_p"])
        bound("dis", None, res["bat_p"])
        bound("soc", res["soc_lo"], a.bat.soc_max)
        bound("cur", None, a.pv.avail)
        bound("pev", None, a.ev.p_max)
        bound("cum", None, a.ev.e_hi)
        bound("ptcl", res["tcl_lo"], res["tcl_hi"])
        bound("etcl", a.tcl.e_min, a.tcl.e_max)
        bound("cut", None, res["cut"])
        bound("pay", None, a.flex.pay_max)

        rows, rlo, rhi = [], [], []

        def row(name, lo, hi, idx=None):
            idx = r[name] if idx is None else idx
            rows.append(idx.ravel())
            rlo.append(np.full(idx.size, -inf) if lo is None else _full(lo, idx.shape))
            rhi.append(np.full(idx.size, inf) if hi is None else _full(hi, idx.shape))
        row("soc_dyn", a.bat.soc0, a.bat.soc0, r["soc_dyn"][:, 0])
        row("soc_final", a.bat.soc_end, None)
        row("ev_need", a.ev.e_lo, None)
        tcl = -p.step_h * a.tcl.p_base
        tcl[:, 0] += a.tcl.e0  # the row's constant (e0 at t = 0) moved to its bounds
        row("tcl_dyn", tcl, tcl)
        row("tcl_final", a.tcl.e0, None)
        row("tcl_dev", a.tcl.p_base, a.tcl.p_base)
        row("flex_owed", a.flex.owed0, a.flex.owed0, r["flex_owed"][:, 0])
        row("head_def", d["head_rhs"], d["head_rhs"])
        row("over_def", None, np.full(n, d["peak_limit"]))
        row("under_def", np.full(n, -d["export_limit"]), None)
        row("dr_def", None, d["dr_target"])
        if self.grid:
            row("v_low", d["v_lo"], None)
            row("v_high", None, d["v_hi"])
            if "l_hi" in d:
                row("l_high", None, d["l_hi"])

        costs = [(c["head"], d["c_head"])]
        for name, w in (("dr_short", "w_dr"), ("over", "w_over"), ("under", "w_export"), ("peak", "w_peak"),
                        ("soc_short", "w_soc"), ("cur", "w_pv"), ("unmet", "w_ev"), ("tcl_short", "w_tcl"),
                        ("cut", "w_flex")):
            costs.append((c[name], d[w]))
        costs.append((c["owed"][:, n - 1], d["c_owed"]))
        if self.grid:
            costs += [(c["sv"], d["w_grid"]), (c["sl"], d["w_grid"])]
        kidx = np.concatenate([i.ravel() for i, _ in costs])
        kval = np.concatenate([np.full(i.size, v, float) if np.ndim(v) == 0 else np.asarray(v, float).ravel()
                               for i, v in costs])
        cat = np.concatenate
        return (cat(cols), cat(clo), cat(chi)), (cat(rows), cat(rlo), cat(rhi)), (kidx, kval)

    def push(self, hs, p: DispatchProblem, a: Aggregated, d: dict) -> None:
        """Write this problem's numbers into the HiGHS model `hs` (highspy.Highs)."""
        (ci, cl, cu), (ri, rl, ru), (ki, kv) = self.numbers(p, a, d)
        hs.changeColsBounds(ci.size, ci, cl, cu)
        hs.changeRowsBounds(ri.size, ri, rl, ru)
        hs.changeColsCost(ki.size, ki, kv)

    def matches(self, opt, p: DispatchProblem, a: Aggregated, d: dict) -> bool:
        """True when `push` would write what appsi holds for this problem, element for element,
        and its rows/cost columns are exactly appsi's mutable ones."""
        from pyomo.contrib.appsi.solvers.highs import _MutableConstraintBounds, _MutableObjectiveCoefficient

        (ci, cl, cu), (ri, rl, ru), (ki, kv) = self.numbers(p, a, d)
        cmap, vmap = opt._pyomo_con_to_solver_con_map, opt._pyomo_var_to_solver_var_map
        mut_rows = {cmap[c] for c, hs in opt._mutable_helpers.items()
                    if any(isinstance(h, _MutableConstraintBounds) for h in hs)}
        mut_cost = {vmap[h.pyomo_var_id] for h in opt._objective_helpers
                    if isinstance(h, _MutableObjectiveCoefficient)}
        bounded = {vmap[id(v)] for v, lb, ub, *_ in opt._vars.values() if lb is not None or ub is not None}
        if set(ri.tolist()) != mut_rows or set(ki.tolist()) != mut_cost or set(ci.tolist()) != bounded:
            return False
        if len(set(ri.tolist())) != ri.size or len(set(ki.tolist())) != ki.size:
            return False
        lp = opt._solver_model.getLp()
        same = lambda x, y: np.array_equal(np.asarray(x, float), y)
        return (same(np.asarray(lp.col_lower_)[ci], cl) and same(np.asarray(lp.col_upper_)[ci], cu)
                and same(np.asarray(lp.row_lower_)[ri], rl) and same(np.asarray(lp.row_upper_)[ri], ru)
                and same(np.asarray(lp.col_cost_)[ki], kv))
