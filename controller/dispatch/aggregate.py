"""Aggregation of devices into virtual units per class and bus, and disaggregation of the
optimizer's group powers back to devices.

Why: a per-device LP at 96 steps x 1,000 devices is dominated by Pyomo build time; devices of
one class at one bus with the same efficiencies behave like one bigger device, so the LP sees
one unit per (class, bus, efficiency) and the result is split afterwards, step by step,
proportionally to each device's headroom and never beyond its own limits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from controller.dispatch.problem import DispatchProblem

EV_ETA_DEFAULT = 0.92


def _groups(keys: list[tuple], aggregate: bool) -> tuple[list[tuple], list[np.ndarray]]:
    """Unique keys (in first-seen order) and the device indices of each group."""
    if not aggregate:
        return [(i, *k) for i, k in enumerate(keys)], [np.array([i]) for i in range(len(keys))]
    index: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        index.setdefault(k, []).append(i)
    return list(index), [np.array(v) for v in index.values()]


def _sum(a: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    return np.array([a[m].sum(axis=0) for m in members]) if members else np.zeros((0,) + a.shape[1:])


@dataclass
class BatteryGroups:
    keys: list[tuple]
    members: list[np.ndarray]
    bus: np.ndarray
    p_max: np.ndarray
    soc_min: np.ndarray
    soc_max: np.ndarray
    soc0: np.ndarray
    soc_end: np.ndarray
    eta_ch: np.ndarray
    eta_dis: np.ndarray
    deg: np.ndarray


@dataclass
class PvGroups:
    keys: list[tuple]
    members: list[np.ndarray]
    bus: np.ndarray
    avail: np.ndarray  # (g, n)


@dataclass
class EvGroups:
    keys: list[tuple]
    members: list[np.ndarray]
    bus: np.ndarray
    eta: np.ndarray
    p_max: np.ndarray  # (g, n): sum of connected chargers' power
    e_lo: np.ndarray  # (g, n): cumulative energy needed by the end of step k
    e_hi: np.ndarray  # (g, n): cumulative energy the cars can take by the end of step k
    # per device, for disaggregation
    dev_conn: np.ndarray  # (d, n) bool
    dev_req: np.ndarray  # energy required within the horizon
    dev_last: np.ndarray  # int: number of connected steps within the horizon
    dev_eta: np.ndarray


@dataclass
class TclGroups:
    keys: list[tuple]
    bus: np.ndarray
    p_min: np.ndarray  # (g, n)
    p_max: np.ndarray
    p_base: np.ndarray
    e_min: np.ndarray
    e_max: np.ndarray
    e0: np.ndarray


@dataclass
class FlexGroups:
    keys: list[tuple]
    members: list[np.ndarray]
    bus: np.ndarray
    base: np.ndarray  # (g, n)
    cut_max: np.ndarray  # (g, n)
    pay_max: np.ndarray
    rebound: np.ndarray
    owed0: np.ndarray
    dev_cut_max: np.ndarray  # (d, n)


@dataclass
class Aggregated:
    bat: BatteryGroups
    pv: PvGroups
    ev: EvGroups
    tcl: TclGroups
    flex: FlexGroups
    bat_dev_keys: list[tuple]  # group key per battery / EV (cached by the real-time loop)
    ev_dev_keys: list[tuple]

    def signature(self) -> tuple:
        """Everything that fixes the LP's structure (not its numbers)."""
        return (tuple(self.bat.keys), tuple(self.pv.keys), tuple(self.ev.keys),
                tuple(self.tcl.keys), tuple(self.flex.keys))

    @property
    def n_groups(self) -> int:
        return sum(len(k) for k in self.signature())


SOC_BINS = 4  # batteries are grouped by SOC fraction quartile and C-rate as well


def battery_keys(p: DispatchProblem) -> list[tuple]:
    """Group key per battery: bus, efficiencies, degradation cost, C-rate and SOC-fraction
    bin. Devices in different SOC bins cannot follow one aggregate trajectory (the fuller one
    saturates first), so they are kept apart."""
    b = p.batteries
    bus = np.asarray(b.bus, int)
    eta_c, eta_d = np.asarray(b.eta_ch, float), np.asarray(b.eta_dis, float)
    deg = np.asarray(b.deg_cost_eur_per_kwh, float)
    smin, smax = np.asarray(b.soc_min_kwh, float), np.asarray(b.soc_max_kwh, float)
    frac = np.clip((np.asarray(b.soc_kwh, float) - smin) / np.maximum(smax - smin, 1e-9), 0, 1)
    sbin = np.minimum((frac * SOC_BINS).astype(int), SOC_BINS - 1)
    crate = np.round(4 * np.asarray(b.p_max_kw, float) / np.maximum(smax - smin, 1e-9)) / 4
    return [(int(bus[i]), round(eta_c[i], 4), round(eta_d[i], 4), round(deg[i], 5),
             float(crate[i]), int(sbin[i])) for i in range(b.n)]


def _ev_keys(bus, eta, last, req, cap) -> list[tuple]:
    """EVs are grouped per bus and efficiency, hour of departure and a log2 bin of the steps
    they need at full power: cars in one group can follow one aggregate trajectory."""
    fill = np.ceil(np.log2(1.0 + np.divide(req, cap, out=np.zeros_like(req), where=cap > 0)))
    return [(int(bus[i]), round(eta[i], 4), int(last[i]) // 4, int(fill[i])) for i in range(len(bus))]


def aggregate(p: DispatchProblem, by_group: bool = True, bat_keys: list[tuple] | None = None,
              ev_keys: list[tuple] | None = None) -> Aggregated:
    """Sum devices into virtual units per (class, bus, efficiencies); `by_group=False` keeps
    one unit per device (the reference formulation). `bat_keys` overrides battery_keys(p)
    (the real-time loop keeps its groups stable between solves)."""
    n, dt_h = p.n_steps, p.step_h
    b = p.batteries
    if b is not None and b.n:
        bus = np.asarray(b.bus, int)
        eta_c, eta_d = np.asarray(b.eta_ch, float), np.asarray(b.eta_dis, float)
        deg = np.asarray(b.deg_cost_eur_per_kwh, float)
        bat_keys = bat_keys or battery_keys(p)
        gk, mem = _groups(bat_keys, by_group)
        smin, smax = np.asarray(b.soc_min_kwh, float), np.asarray(b.soc_max_kwh, float)
        soc0 = np.clip(np.asarray(b.soc_kwh, float), smin, smax)
        send = soc0 if b.soc_end_min_kwh is None else np.clip(np.asarray(b.soc_end_min_kwh, float), smin, smax)
        bat = BatteryGroups(gk, mem, np.array([bus[m[0]] for m in mem], int),
                            _sum(np.asarray(b.p_max_kw, float), mem), _sum(smin, mem),
                            _sum(smax, mem), _sum(soc0, mem), _sum(send, mem),
                            np.array([eta_c[m[0]] for m in mem]), np.array([eta_d[m[0]] for m in mem]),
                            np.array([deg[m[0]] for m in mem]))
    else:
        z = np.zeros(0)
        bat = BatteryGroups([], [], z.astype(int), z, z, z, z, z, z, z, z)

    v = p.pv
    if v is not None and v.n:
        bus = np.asarray(v.bus, int)
        gk, mem = _groups([(int(x),) for x in bus], by_group)
        pv = PvGroups(gk, mem, np.array([bus[m[0]] for m in mem], int),
                      _sum(np.maximum(np.asarray(v.p_avail_kw, float), 0.0), mem))
    else:
        pv = PvGroups([], [], np.zeros(0, int), np.zeros((0, n)))

    e = p.evs
    if e is not None and e.n:
        bus = np.asarray(e.bus, int)
        eta = np.full(e.n, EV_ETA_DEFAULT) if e.eta is None else np.asarray(e.eta, float)
        pmax = np.asarray(e.p_max_kw, float)
        dep = np.asarray(e.departure_step, int)
        need = np.maximum(np.asarray(e.e_need_kwh, float), 0.0)
        conn_now = np.asarray(e.connected, bool)
        last = np.where(conn_now, np.clip(dep, 0, n), 0)  # connected steps within horizon
        conn = np.arange(n)[None, :] < last[:, None]
        cap = pmax * eta * dt_h  # kWh per connected step
        after = np.where(conn_now, np.maximum(dep - n, 0), 0)
        req = np.where(conn_now, np.maximum(need - cap * after, 0.0), 0.0)
        k1 = np.arange(1, n + 1)[None, :]
        lo = np.maximum(req[:, None] - cap[:, None] * np.maximum(last[:, None] - k1, 0), 0.0)
        hi = np.minimum(need[:, None], cap[:, None] * np.minimum(k1, last[:, None]))
        # lo > hi only when the need is infeasible; the LP's unmet slack absorbs the gap
        ev_keys = ev_keys or _ev_keys(bus, eta, last, req, cap)
        gk, mem = _groups(ev_keys, by_group)
        ev = EvGroups(gk, mem, np.array([bus[m[0]] for m in mem], int),
                      np.array([eta[m[0]] for m in mem]), _sum(pmax[:, None] * conn, mem),
                      _sum(lo, mem), _sum(hi, mem), conn, req, last, eta)
    else:
        z = np.zeros((0, n))
        ev = EvGroups([], [], np.zeros(0, int), np.zeros(0), z, z, z, np.zeros((0, n), bool),
                      np.zeros(0), np.zeros(0, int), np.zeros(0))

    ts = p.tcls
    tcl = TclGroups([(t.name,) for t in ts], np.array([t.bus for t in ts], int),
                    np.array([np.asarray(t.p_min_kw, float) for t in ts]).reshape(len(ts), n),
                    np.array([np.asarray(t.p_max_kw, float) for t in ts]).reshape(len(ts), n),
                    np.array([np.zeros(n) if t.p_base_kw is None else np.asarray(t.p_base_kw, float)
                              for t in ts]).reshape(len(ts), n),
                    np.array([t.e_min_kwh for t in ts], float), np.array([t.e_max_kwh for t in ts], float),
                    np.array([min(max(t.e0_kwh, t.e_min_kwh), t.e_max_kwh) for t in ts], float))

    f = p.flex
    if f is not None and f.n:
        bus = np.asarray(f.bus, int)
        reb = np.asarray(f.rebound, float)
        base = np.asarray(f.p_base_kw, float)
        cmax = np.clip(np.asarray(f.flex_share, float), 0, 1)[:, None] * np.maximum(base, 0.0)
        owed = np.zeros(f.n) if f.owed_kwh is None else np.asarray(f.owed_kwh, float)
        gk, mem = _groups([(int(bus[i]), round(reb[i], 4)) for i in range(f.n)], by_group)
        flex = FlexGroups(gk, mem, np.array([bus[m[0]] for m in mem], int), _sum(base, mem),
                          _sum(cmax, mem), _sum(np.asarray(f.payback_max_kw, float), mem),
                          np.array([reb[m[0]] for m in mem]), _sum(owed, mem), cmax)
    else:
        z = np.zeros((0, n))
        flex = FlexGroups([], [], np.zeros(0, int), z, z, np.zeros(0), np.zeros(0), np.zeros(0), z)
    return Aggregated(bat, pv, ev, tcl, flex, bat_keys or [], ev_keys or [])


# --- compiled per-step loops -------------------------------------------------------------------
# The disaggregation runs every step of every group of every re-plan (cigre_mv_day: 148 plans x
# 96 steps x 5 battery groups), so it is compiled. The kernels do the arithmetic of the numpy
# formulation they replaced in the same order, including numpy's pairwise summation and its
# maximum/minimum/clip rules for NaN and signed zeros, so results are bit for bit the same.

@njit(cache=True)
def _block_sum(a):
    """numpy's pairwise-sum leaf (len(a) <= 128): plain loop below 8, else 8 partial sums."""
    n = a.size
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[i]
        return res
    r0, r1, r2, r3, r4, r5, r6, r7 = a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]
    i = 8
    while i < n - (n % 8):
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[i]
        i += 1
    return res


@njit(cache=True)
def _psum(a):
    """np.sum(a) of a contiguous float64 array, bit for bit: numpy's pairwise summation
    (halves, cut at multiples of 8, down to blocks of <= 128), evaluated with an explicit stack
    (numba's cache does not take recursive functions)."""
    n = a.size
    if n <= 128:
        return _block_sum(a[:n])
    s_lo = np.empty(192, np.int64)
    s_n = np.empty(192, np.int64)
    s_join = np.empty(192, np.bool_)
    vals = np.empty(96)
    top, nv = 1, 0
    s_lo[0], s_n[0], s_join[0] = 0, n, False
    while top:
        top -= 1
        l, m = s_lo[top], s_n[top]
        if s_join[top]:  # both halves done: left + right
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
        elif m <= 128:
            vals[nv] = _block_sum(a[l:l + m])
            nv += 1
        else:
            n2 = m // 2
            n2 -= n2 % 8
            s_lo[top], s_n[top], s_join[top] = l, m, True
            s_lo[top + 1], s_n[top + 1], s_join[top + 1] = l + n2, m - n2, False
            s_lo[top + 2], s_n[top + 2], s_join[top + 2] = l, n2, False
            top += 3
    return vals[0]


@njit(cache=True)
def _largest(start):
    """Size of the largest group (offsets `start`)."""
    big = 0
    for g in range(start.size - 1):
        big = max(big, start[g + 1] - start[g])
    return big


@njit(cache=True)
def _max(a, b):  # np.maximum
    return a if (a > b or a != a) else b


@njit(cache=True)
def _min(a, b):  # np.minimum
    return a if (a < b or a != a) else b


@njit(cache=True)
def _split_nb(total, caps, out):
    """Share `total` >= 0 in proportion to `caps` >= 0 into `out`, never above a cap."""
    s = _psum(caps[:])
    if s <= 1e-12 or total <= 0:
        out[:] = 0.0
        return
    f = total / s
    f = f if f < 1.0 else 1.0  # min(1.0, f)
    for i in range(caps.size):
        out[i] = caps[i] * f


@njit(cache=True)
def _fill_nb(total, weights, caps, x, free, buf, tmp):
    """Water-filling into `x`: x_i = min(cap_i, lam * w_i) with sum(x) = total (or all caps if
    less); at most one pass per device; the rest (zero-weight devices) in proportion to the
    room left. `free`, `buf`, `tmp`: scratch of the same length."""
    k = caps.size
    x[:] = 0.0
    if total <= 0:
        return
    for i in range(k):
        free[i] = caps[i] > 1e-12 and weights[i] > 1e-12
    left = total
    for _ in range(k + 1):
        c = 0
        for i in range(k):
            if free[i]:
                buf[c] = weights[i]
                c += 1
        ws = _psum(buf[:c])
        if ws <= 1e-12 or left <= 1e-12:
            break
        lam = left / ws
        c = 0
        for i in range(k):
            if free[i] and lam * weights[i] >= caps[i]:
                buf[c] = caps[i]
                c += 1
        if c == 0:
            for i in range(k):
                if free[i]:
                    x[i] = lam * weights[i]
            return
        for i in range(k):
            if free[i] and lam * weights[i] >= caps[i]:
                x[i] = caps[i]
                free[i] = False
        left -= _psum(buf[:c])
    rest = total - _psum(x[:k])
    for i in range(k):
        buf[i] = caps[i] - x[i]
    _split_nb(rest if rest > 0.0 else 0.0, buf, tmp)  # max(total - x.sum(), 0.0)
    for i in range(k):
        x[i] = x[i] + tmp[i]


@njit(cache=True)
def _batteries_nb(p_g, order, start, pmax, smin, smax, eta_c, eta_d, soc, dt_h, p_dev, soc_dev):
    """Per step: each group's power shared by water-filling over the members' energy room;
    then every device's SOC. Returns the summed |group power - devices' sum|."""
    n = p_g.shape[1]
    residual = 0.0
    scratch = np.empty((5, _largest(start)))
    free = np.empty(scratch.shape[1], np.bool_)
    for k in range(n):
        for gi in range(start.size - 1):
            lo, hi = start[gi], start[gi + 1]
            size = hi - lo
            w, caps, pk = scratch[0, :size], scratch[1, :size], scratch[2, :size]
            x = p_g[gi, k]
            for j in range(size):
                i = order[lo + j]
                if x > 0:
                    w[j] = _max(smax[i] - soc[i], 0.0) / eta_c[i]
                else:
                    w[j] = _max(soc[i] - smin[i], 0.0) * eta_d[i]
                caps[j] = _min(pmax[i], w[j] / dt_h)
            tmp = (free[:size], scratch[3, :size], scratch[4, :size])
            if x > 0:
                _fill_nb(x, w, caps, pk, *tmp)
            else:
                _fill_nb(-x, w, caps, pk, *tmp)
                for j in range(size):
                    pk[j] = -pk[j]
            residual += abs(x - _psum(pk[:size]))
            for j in range(size):
                p_dev[order[lo + j], k] = pk[j]
        for i in range(soc.size):
            q = p_dev[i, k]
            d = q * eta_c[i] if q > 0 else q / eta_d[i]
            soc[i] = _min(_max(soc[i] + d * dt_h, smin[i]), smax[i])
            soc_dev[i, k] = soc[i]
    return residual


@njit(cache=True)
def _evs_nb(p_g, order, start, pmax, eta, conn, last, left, room, dt_h, p_dev):
    """Per step and group: least-laxity energy first, the rest in proportion to free rate.
    Updates `left` and `room` in place; returns the summed |group power - devices' sum|."""
    n = p_g.shape[1]
    residual = 0.0
    scratch = np.empty((7, _largest(start)))
    for k in range(n):
        for gi in range(start.size - 1):
            lo, hi = start[gi], start[gi + 1]
            size = hi - lo
            x = p_g[gi, k]
            x = 0.0 if 0.0 > x else x  # max(x, 0.0)
            kwh, rate, must = scratch[0, :size], scratch[1, :size], scratch[2, :size]
            first, free, second, pk = scratch[3, :size], scratch[4, :size], scratch[5, :size], scratch[6, :size]
            for j in range(size):
                i = order[lo + j]
                kwh[j] = eta[i] * dt_h
                rate[j] = _min(pmax[i], room[i] / kwh[j]) if conn[i, k] else 0.0
                later = float(max(last[i] - k - 1, 0)) * pmax[i] * kwh[j]
                must[j] = _min(_max(left[i] - later, 0.0) / kwh[j], rate[j])
            _split_nb(x, must, first)
            for j in range(size):
                free[j] = rate[j] - first[j]
            _split_nb(x - _psum(first[:size]), free, second)
            for j in range(size):
                pk[j] = first[j] + second[j]
            residual += abs(x - _psum(pk[:size]))
            for j in range(size):
                i = order[lo + j]
                p_dev[i, k] = pk[j]
                left[i] = _max(left[i] - pk[j] * kwh[j], 0.0)
                room[i] = _max(room[i] - pk[j] * kwh[j], 0.0)
    return residual


def _flat(members: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Group members as one index array and offsets (group g: order[start[g]:start[g + 1]])."""
    sizes = [len(m) for m in members]
    order = np.concatenate(members).astype(np.int64) if members else np.zeros(0, np.int64)
    return order, np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def disaggregate_batteries(p: DispatchProblem, g: BatteryGroups, p_g: np.ndarray):
    """Per-device power and SOC trajectories from group powers (g, n). Each step, a group's
    charge (discharge) is split in proportion to each device's energy room (water-filling
    under its power room), so devices fill and empty together and every device stays inside
    its power and energy limits."""
    b = p.batteries
    n, dt_h = p.n_steps, p.step_h
    f = lambda x: np.ascontiguousarray(x, float)
    pmax = f(b.p_max_kw)
    smin, smax = f(b.soc_min_kwh), f(b.soc_max_kwh)
    soc = np.clip(np.asarray(b.soc_kwh, float), smin, smax).copy()
    p_dev = np.zeros((b.n, n))
    soc_dev = np.zeros((b.n, n))
    order, start = _flat(g.members)
    residual = _batteries_nb(f(p_g), order, start, pmax, smin, smax, f(b.eta_ch), f(b.eta_dis),
                             soc, float(dt_h), p_dev, soc_dev)
    return p_dev, soc_dev, residual / max(n, 1)


def disaggregate_pv(p: DispatchProblem, g: PvGroups, cur_g: np.ndarray) -> np.ndarray:
    """Per-device curtailment in proportion to each device's available power."""
    avail = np.maximum(np.asarray(p.pv.p_avail_kw, float), 0.0)
    cur = np.zeros_like(avail)
    for gi, m in enumerate(g.members):
        tot = g.avail[gi]
        frac = np.divide(cur_g[gi], tot, out=np.zeros_like(tot), where=tot > 1e-12)
        cur[m] = avail[m] * np.clip(frac, 0, 1)[None, :]
    return cur


def disaggregate_evs(p: DispatchProblem, g: EvGroups, p_g: np.ndarray):
    """Per-device charging: each step first the energy a car must get now to still reach its
    requirement by departure (least laxity), then the rest in proportion to free rate."""
    e = p.evs
    n, dt_h = p.n_steps, p.step_h
    pmax = np.asarray(e.p_max_kw, float)
    left = np.array(g.dev_req, float)  # energy still required within the horizon
    room = np.maximum(np.asarray(e.e_need_kwh, float), 0.0)  # energy the car still accepts
    p_dev = np.zeros((e.n, n))
    order, start = _flat(g.members)
    residual = _evs_nb(np.ascontiguousarray(p_g, float), order, start, np.ascontiguousarray(pmax),
                       np.ascontiguousarray(g.dev_eta, float), np.ascontiguousarray(g.dev_conn, np.bool_),
                       np.ascontiguousarray(g.dev_last, np.int64), left, room, float(dt_h), p_dev)
    # Repair: a car the aggregate plan left short gets the missing energy in its cheapest
    # free connected steps (the deviation from the plan is counted in the residual).
    order = np.argsort(np.asarray(p.prices_eur_per_mwh, float), kind="stable")
    for i in np.flatnonzero(left > 1e-9):
        kwh = g.dev_eta[i] * dt_h
        for k in order:
            if left[i] <= 1e-9:
                break
            if g.dev_conn[i, k]:
                add = min(pmax[i] - p_dev[i, k], left[i] / kwh)
                if add > 0:
                    p_dev[i, k] += add
                    left[i] -= add * kwh
                    residual += add
    return p_dev, left, residual / max(n, 1)


def disaggregate_flex(p: DispatchProblem, g: FlexGroups, cut_g: np.ndarray, pay_g: np.ndarray):
    """Per-device curtailment in proportion to each device's curtailable power; payback in
    proportion to each device's payback limit."""
    f = p.flex
    cut = np.zeros((f.n, p.n_steps))
    pay = np.zeros_like(cut)
    pmax = np.asarray(f.payback_max_kw, float)
    for gi, m in enumerate(g.members):
        tot = g.cut_max[gi]
        frac = np.divide(cut_g[gi], tot, out=np.zeros_like(tot), where=tot > 1e-12)
        cut[m] = g.dev_cut_max[m] * np.clip(frac, 0, 1)[None, :]
        pt = pmax[m].sum()
        if pt > 0:
            pay[m] = (pmax[m] / pt)[:, None] * pay_g[gi][None, :]
    return cut, pay
