"""Thermostatically controlled load (TCL) physics kernels over struct-of-arrays.

First-order equivalent thermal parameter (ETP) model, exactly discretised for a
piecewise-constant on/off state:  T' = (T_out - T - mode*on*R*P_th) / (R*C), mode +1 cools
(air conditioner), -1 heats (heat pump). Hysteresis thermostat with minimum on/off lockout,
direct-load-control force (-1 off / 0 auto / +1 on, lockout respected unless `override`),
setpoint offset, and a one-shot fraction command (switch this share of eligible devices now).
Devices are independent, so `prange` runs over blocks of devices; inside a block, sub-blocks
of 256 devices walk all the steps of a call step-major with a branch-free (vectorised) inner
loop over devices; per-step aggregate power is summed per block.

`advance_numpy` is the same first-order model as plain vectorised numpy (the benchmark's
baseline and the numba kernel's cross-check).
"""

from __future__ import annotations

import math
import time

import numpy as np
from numba import get_num_threads, njit, parallel_chunksize, prange

_M1 = np.uint64(0x9E3779B97F4A7C15)
_M2 = np.uint64(0xBF58476D1CE4E5B9)
_M3 = np.uint64(0x94D049BB133111EB)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)


@njit(cache=True, inline="always")
def uniform_hash(seed, i, step):
    """Deterministic U[0,1) per (seed, device, step): splitmix64, independent of thread count."""
    z = np.uint64(seed) * _M1 + np.uint64(i) * _M2 + np.uint64(step) * _M3 + _M1
    z = (z ^ (z >> _S30)) * _M2
    z = (z ^ (z >> _S27)) * _M3
    z = z ^ (z >> _S31)
    return float(z >> _S11) * (1.0 / 9007199254740992.0)


@njit(cache=True, inline="always")
def _decide(i, k, t, on, since, mode, t_set, t_off, half_db, force, override, min_on, min_off,
            frac_on, frac_off, seed, step0):
    """New on-state and whether the switch broke a lockout; -1 when no switch happens."""
    want = on
    if force != 0:
        want = 1 if force > 0 else 0
    else:
        dev = mode * (t - (t_set + t_off))
        if dev > half_db:
            want = 1
        elif dev < -half_db:
            want = 0
        elif k == 0 and (frac_on > 0.0 or frac_off > 0.0):
            r = uniform_hash(seed, i, step0)
            if on == 0 and r < frac_on:
                want = 1
            elif on == 1 and r < frac_off:
                want = 0
    if want == on:
        return -1
    locked = since < (min_on if on == 1 else min_off)
    if locked and not (override and force != 0):
        return -1
    return want


_SUB = 256  # devices per sub-block: their state and parameters stay in L1 cache


@njit(cache=True, fastmath={"reassoc"})
def _steps_sub(nb, T, S, SN, DM, SWC, LVC, IB, THR, M, HD, FF, FW, FREE, AV, MON, MOFF, G, DEC,
               TS, CC, PK, t_out_c, dt_s, dt_min, part_row):
    """All steps for one sub-block, step-major: the inner loop over devices is branch-free
    (selects only) so LLVM vectorises it and the devices' temperature chains overlap; a
    device-major loop waits on one device's dependency chain every step. `reassoc` only
    lets the per-step power sum use vector lanes (a fixed order: reruns stay bit-identical)."""
    for k in range(t_out_c.size):
        to = t_out_c[k]
        acc = 0.0
        for i in range(nb):
            t = T[i]
            s = S[i]
            since = SN[i]
            ib = IB[i]  # the in-deadband decision: keep state, or the fraction command at k = 0
            m = M[i]
            hd = HD[i]
            ff = FF[i]
            fw = FW[i]
            free = FREE[i]
            av = AV[i]
            mon = MON[i]
            moff = MOFF[i]
            g = G[i]
            dec = DEC[i]
            ts = TS[i]
            cc = CC[i]
            pk = PK[i]
            dm = DM[i]
            swc = SWC[i]
            lvc = LVC[i]
            dev = m * (t - THR[i])
            want = 1.0 if dev > hd else (0.0 if dev < -hd else ib)
            want = fw if ff != 0.0 else want  # forced, or off while unavailable
            lock = mon if s == 1.0 else moff
            locked = since < lock
            sw = (want != s) & ((~locked) | (free != 0.0))
            s = want if sw else s
            since = 0.0 if sw else since
            swc += 1.0 if sw else 0.0
            lvc += 1.0 if (sw & locked & (av != 0.0)) else 0.0
            t_ss = to - s * g
            t = t_ss + (t - t_ss) * dec
            since += dt_s
            out = abs(t - ts) - cc
            dm += max(out, 0.0) * dt_min
            acc += s * pk
            T[i] = t
            S[i] = s
            SN[i] = since
            IB[i] = s
            DM[i] = dm
            SWC[i] = swc
            LVC[i] = lvc
        part_row[k] += acc


@njit(cache=True, fastmath={"reassoc"})
def _steps_sub_plain(nb, T, S, SN, DM, SWC, IB, THR, M, HD, MON, MOFF, G, DEC, TS, CC, PK,
                     t_out_c, dt_s, dt_min, part_row):
    """`_steps_sub` for a sub-block with no force and every device available (the usual case):
    the same arithmetic with five fewer streams (no lockout break is possible)."""
    for k in range(t_out_c.size):
        to = t_out_c[k]
        acc = 0.0
        for i in range(nb):
            t = T[i]
            s = S[i]
            since = SN[i]
            ib = IB[i]
            m = M[i]
            hd = HD[i]
            mon = MON[i]
            moff = MOFF[i]
            g = G[i]
            dec = DEC[i]
            ts = TS[i]
            cc = CC[i]
            pk = PK[i]
            dm = DM[i]
            swc = SWC[i]
            dev = m * (t - THR[i])
            want = 1.0 if dev > hd else (0.0 if dev < -hd else ib)
            lock = mon if s == 1.0 else moff
            sw = (want != s) & (since >= lock)
            s = want if sw else s
            since = 0.0 if sw else since
            swc += 1.0 if sw else 0.0
            t_ss = to - s * g
            t = t_ss + (t - t_ss) * dec
            since += dt_s
            out = abs(t - ts) - cc
            dm += max(out, 0.0) * dt_min
            acc += s * pk
            T[i] = t
            S[i] = s
            SN[i] = since
            IB[i] = s
            DM[i] = dm
            SWC[i] = swc
        part_row[k] += acc


@njit(cache=True)
def _first_order_block(lo, hi, part_row, t_in, on, since_s, switches, comfort_dm, lock_viol, decay,
                       gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s, min_off_s, t_offset,
                       force, override, frac_on, frac_off, available, t_out_c, dt_s, seed, step0):
    """Devices lo..hi over all steps: sub-blocks of _SUB devices copied into float64 scratch
    arrays (controls folded into want/free flags), stepped, copied back."""
    dt_min = dt_s / 60.0
    B = _SUB
    T = np.empty(B)
    S = np.empty(B)
    SN = np.empty(B)
    DM = np.empty(B)
    SWC = np.empty(B)
    LVC = np.empty(B)
    IB = np.empty(B)
    THR = np.empty(B)
    M = np.empty(B)
    HD = np.empty(B)
    FF = np.empty(B)
    FW = np.empty(B)
    FREE = np.empty(B)
    AV = np.empty(B)
    MON = np.empty(B)
    MOFF = np.empty(B)
    G = np.empty(B)
    DEC = np.empty(B)
    TS = np.empty(B)
    CC = np.empty(B)
    PK = np.empty(B)
    for b0 in range(lo, hi, B):
        nb = min(B, hi - b0)
        for j in range(nb):
            i = b0 + j
            s = 1.0 if on[i] != 0 else 0.0
            T[j] = t_in[i]
            S[j] = s
            SN[j] = since_s[i]
            DM[j] = comfort_dm[i]
            SWC[j] = 0.0
            LVC[j] = 0.0
            m = mode[i]
            M[j] = m
            THR[j] = t_set[i] + t_offset[i]
            HD[j] = half_db[i]
            f = force[i]
            av = available[i]
            AV[j] = 1.0 if av else 0.0
            FF[j] = 1.0 if (f != 0 or not av) else 0.0
            FW[j] = 1.0 if (av and f > 0) else 0.0
            FREE[j] = 1.0 if ((override[i] and f != 0) or not av) else 0.0
            MON[j] = min_on_s[i]
            MOFF[j] = min_off_s[i]
            G[j] = m * gain_c[i]
            DEC[j] = decay[i]
            TS[j] = t_set[i]
            CC[j] = comfort_c[i]
            PK[j] = p_kw[i]
            ib = s
            fon = frac_on[i]
            foff = frac_off[i]
            if fon > 0.0 or foff > 0.0:  # one-shot: in the deadband, switch with this probability
                r = uniform_hash(seed, i, step0)
                if s == 0.0 and r < fon:
                    ib = 1.0
                elif s == 1.0 and r < foff:
                    ib = 0.0
            IB[j] = ib
        plain = True
        for j in range(nb):
            if FF[j] != 0.0:
                plain = False
        if plain:
            _steps_sub_plain(nb, T, S, SN, DM, SWC, IB, THR, M, HD, MON, MOFF, G, DEC, TS, CC, PK,
                             t_out_c, dt_s, dt_min, part_row)
        else:
            _steps_sub(nb, T, S, SN, DM, SWC, LVC, IB, THR, M, HD, FF, FW, FREE, AV, MON, MOFF, G,
                       DEC, TS, CC, PK, t_out_c, dt_s, dt_min, part_row)
        for j in range(nb):
            i = b0 + j
            t_in[i] = T[j]
            on[i] = 1 if S[j] != 0.0 else 0
            since_s[i] = SN[j]
            comfort_dm[i] = DM[j]
            switches[i] += np.int64(SWC[j])
            lock_viol[i] += np.int64(LVC[j])


@njit(parallel=True, cache=True)
def advance_first_order(t_in, on, since_s, switches, comfort_dm, lock_viol,
                        decay, gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s, min_off_s,
                        t_offset, force, override, frac_on, frac_off, available,
                        t_out_c, dt_s, seed, step0, n_blocks, agg_kw):
    """Advance every device len(t_out_c) steps of dt_s; add per-step group power into agg_kw.

    decay = exp(-dt/(R*C)), gain_c = R*COP*P (steady-state temperature drop when on). State
    arrays (t_in, on, since_s, switches, comfort_dm, lock_viol) are updated in place.
    Unavailable devices draw nothing and their thermostat is frozen off (comm/power loss).
    Per-block sums are added in block order, so the result does not depend on the thread
    count. Call it inside `numba.parallel_chunksize(1)` so that blocks go to threads one at a
    time (a thread the OS pauses then holds up one block, not half the work).
    """
    n = t_in.size
    n_steps = t_out_c.size
    part = np.zeros((n_blocks, n_steps))
    per = (n + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        lo = blk * per
        hi = min(n, lo + per)
        _first_order_block(lo, hi, part[blk], t_in, on, since_s, switches, comfort_dm, lock_viol,
                           decay, gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s,
                           min_off_s, t_offset, force, override, frac_on, frac_off, available,
                           t_out_c, dt_s, seed, step0)
    _add_blocks(part, agg_kw)


@njit(cache=True)
def advance_first_order_serial(t_in, on, since_s, switches, comfort_dm, lock_viol,
                               decay, gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s,
                               min_off_s, t_offset, force, override, frac_on, frac_off, available,
                               t_out_c, dt_s, seed, step0, n_blocks, agg_kw):
    """`advance_first_order` on the calling thread, bit-identical to it (same blocks, same
    order of sums): for small groups, where waking a thread pool costs more than the work."""
    n = t_in.size
    part = np.zeros((n_blocks, t_out_c.size))
    per = (n + n_blocks - 1) // n_blocks
    for blk in range(n_blocks):
        lo = blk * per
        _first_order_block(lo, min(n, lo + per), part[blk], t_in, on, since_s, switches,
                           comfort_dm, lock_viol, decay, gain_c, p_kw, mode, t_set, half_db,
                           comfort_c, min_on_s, min_off_s, t_offset, force, override, frac_on,
                           frac_off, available, t_out_c, dt_s, seed, step0)
    _add_blocks(part, agg_kw)


@njit(cache=True)
def _add_blocks(part, agg_kw):
    for blk in range(part.shape[0]):
        for k in range(part.shape[1]):
            agg_kw[k] += part[blk, k]


@njit(cache=True)
def advance_second_order(t_air, t_mass, on, since_s, switches, comfort_dm, lock_viol,
                         k_out, k_mass_a, k_mass_m, k_hvac, p_kw, mode, t_set, half_db, comfort_c,
                         min_on_s, min_off_s, t_offset, force, override, frac_on, frac_off,
                         available, t_out_c, dt_s, n_sub, seed, step0, n_blocks, agg_kw):
    """Air/mass ETP: C_a T_a' = (T_o-T_a)/R_a + (T_m-T_a)/R_m - mode*on*P_th; C_m T_m' =
    (T_a-T_m)/R_m. Explicit Euler with n_sub sub-steps per step (coefficients per second:
    k_out=1/(R_a C_a), k_mass_a=1/(R_m C_a), k_mass_m=1/(R_m C_m), k_hvac=P_th/C_a).
    The thermostat sees air temperature. Single-threaded (the optional model; prange = range)."""
    n = t_air.size
    n_steps = t_out_c.size
    part = np.zeros((n_blocks, n_steps))
    per = (n + n_blocks - 1) // n_blocks
    h = dt_s / n_sub
    for blk in prange(n_blocks):
        lo = blk * per
        hi = min(n, lo + per)
        for i in range(lo, hi):
            ta = t_air[i]
            tm = t_mass[i]
            s_on = on[i]
            since = since_s[i]
            m = mode[i]
            for k in range(n_steps):
                if available[i]:
                    new = _decide(i, k, ta, s_on, since, m, t_set[i], t_offset[i], half_db[i],
                                  force[i], override[i], min_on_s[i], min_off_s[i],
                                  frac_on[i], frac_off[i], seed, step0)
                elif s_on == 1:
                    new = 0
                else:
                    new = -1
                if new >= 0:
                    if available[i] and since < (min_on_s[i] if s_on == 1 else min_off_s[i]):
                        lock_viol[i] += 1
                    s_on = new
                    since = 0.0
                    switches[i] += 1
                for _ in range(n_sub):
                    dta = (k_out[i] * (t_out_c[k] - ta) + k_mass_a[i] * (tm - ta)
                           - m * s_on * k_hvac[i])
                    dtm = k_mass_m[i] * (ta - tm)
                    ta += h * dta
                    tm += h * dtm
                since += dt_s
                out = abs(ta - t_set[i]) - comfort_c[i]
                if out > 0.0:
                    comfort_dm[i] += out * dt_s / 60.0
                if s_on == 1:
                    part[blk, k] += p_kw[i]
            t_air[i] = ta
            t_mass[i] = tm
            on[i] = s_on
            since_s[i] = since
    for blk in range(n_blocks):
        for k in range(n_steps):
            agg_kw[k] += part[blk, k]


class KernelChoice:
    """Runs a first-order group on numba's threads or on the calling thread, whichever has
    been faster per device-step lately. Threads pay on an idle multi-core machine and cost on
    a busy one (a 2-core box shared with other work ran 100k TCLs 2x slower on 2 threads);
    the two kernels give bit-identical results, so the choice never changes a run's numbers.
    Groups under `threads_from` devices, or one-thread processes, always stay serial."""

    PROBE_EVERY = 32  # calls between re-tries of the slower way
    SMOOTH = 0.3  # weight of the newest timing in the running mean

    def __init__(self, threads_from: int = 20_000):
        self.threads_from = threads_from
        self.ns = {False: None, True: None}  # running mean ns per device-step
        self._warm = {False: False, True: False}  # the first call of each compiles
        self.calls = 0

    def threaded(self, n: int) -> bool:
        if n < self.threads_from or get_num_threads() < 2:
            return False
        self.calls += 1
        for way in (False, True):
            if self.ns[way] is None:
                return way
        best = self.ns[True] < self.ns[False]
        return (not best) if self.calls % self.PROBE_EVERY == 0 else best

    def summary(self) -> str:
        """The measured ns per device-step of each way, for benchmark output."""
        if self.calls == 0:
            return "serial (group too small or one thread)"
        ns = {w: ("-" if v is None else f"{v:.2f}") for w, v in self.ns.items()}
        best = "threads" if self.ns[True] is not None and self.ns[False] is not None and \
            self.ns[True] < self.ns[False] else "serial"
        return f"serial {ns[False]} ns, threads {ns[True]} ns per device-step: {best}"

    def run(self, *args) -> None:
        """advance_first_order(*args) the faster way; args as advance_first_order takes them."""
        n = args[0].size
        way = self.threaded(n)
        t0 = time.perf_counter()
        if way:
            with parallel_chunksize(1):
                advance_first_order(*args)
        else:
            advance_first_order_serial(*args)
        if n < self.threads_from:
            return
        ns = (time.perf_counter() - t0) * 1e9 / max(n * args[21].size, 1)  # args[21]: t_out_c
        if not self._warm[way]:
            self._warm[way] = True
        else:
            old = self.ns[way]
            self.ns[way] = ns if old is None else (1 - self.SMOOTH) * old + self.SMOOTH * ns


MAX_BLOCKS = 16  # blocks per group: enough to balance a few threads, a fixed number so that
# results do not depend on how many threads the machine has


def n_blocks_for(n: int) -> int:
    """Blocks for a group of n devices: at least 256 devices each, at most MAX_BLOCKS."""
    return int(max(1, min(n, MAX_BLOCKS, math.ceil(n / 256))))


def advance_numpy(t_in, on, since_s, switches, comfort_dm, lock_viol,
                  decay, gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s, min_off_s,
                  t_offset, force, override, t_out_c, dt_s, agg_kw):
    """Same first-order model, thermostat, force and lockout as `advance_first_order`
    (without the fraction command and availability), vectorised over devices step by step;
    state arrays are updated in place."""
    on_b = on.astype(bool)
    thr = t_set + t_offset
    force_on = force > 0
    force_off = force < 0
    forced = force != 0
    ovr = override.astype(bool) & forced
    for k in range(t_out_c.size):
        dev = mode * (t_in - thr)
        want = np.where(dev > half_db, True, np.where(dev < -half_db, False, on_b))
        want = np.where(forced, force_on & ~force_off, want)
        locked = since_s < np.where(on_b, min_on_s, min_off_s)
        sw = (want != on_b) & (~locked | ovr)
        lock_viol += sw & locked
        switches += sw
        on_b = np.where(sw, want, on_b)
        since_s[sw] = 0.0
        t_ss = t_out_c[k] - mode * on_b * gain_c
        t_in[:] = t_ss + (t_in - t_ss) * decay
        since_s += dt_s
        comfort_dm += np.maximum(np.abs(t_in - t_set) - comfort_c, 0.0) * (dt_s / 60.0)
        agg_kw[k] += float(p_kw @ on_b)
    on[:] = on_b
