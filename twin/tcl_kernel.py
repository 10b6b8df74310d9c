"""Thermostatically controlled load (TCL) physics kernels over struct-of-arrays.

First-order equivalent thermal parameter (ETP) model, exactly discretised for a
piecewise-constant on/off state:  T' = (T_out - T - mode*on*R*P_th) / (R*C), mode +1 cools
(air conditioner), -1 heats (heat pump). Hysteresis thermostat with minimum on/off lockout,
direct-load-control force (-1 off / 0 auto / +1 on, lockout respected unless `override`),
setpoint offset, and a one-shot fraction command (switch this share of eligible devices now).
Devices are independent, so `prange` runs over blocks of devices and each device walks all
the steps of a call with its state in registers; per-step aggregate power is summed per block.

`advance_numpy` is the same first-order model as plain vectorised numpy (the benchmark's
baseline and the numba kernel's cross-check).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

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


@njit(cache=True)
def _first_order_block(lo, hi, k0, k1, part_row, t_in, on, since_s, switches, comfort_dm,
                       lock_viol, decay, gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s,
                       min_off_s, t_offset, force, override, frac_on, frac_off, available,
                       t_out_c, dt_s, seed, step0):
    """Devices lo..hi over steps k0..k1, each device's state held in registers meanwhile."""
    dt_min = dt_s / 60.0
    for i in range(lo, hi):
        t = t_in[i]
        s_on = on[i]
        since = since_s[i]
        sw = switches[i]
        dm = comfort_dm[i]
        lv = lock_viol[i]
        m = mode[i]
        thr = t_set[i] + t_offset[i]
        hd = half_db[i]
        f = force[i]
        ovr = override[i] and f != 0
        m_on = min_on_s[i]
        m_off = min_off_s[i]
        dec = decay[i]
        g = m * gain_c[i]
        pk = p_kw[i]
        ts = t_set[i]
        cc = comfort_c[i]
        fon = frac_on[i]
        foff = frac_off[i]
        avail = available[i]
        for k in range(k0, k1):
            want = s_on
            if not avail:
                want = 0  # power/comm loss: off now, not a control switch
            elif f != 0:
                want = 1 if f > 0 else 0
            else:
                dev = m * (t - thr)
                if dev > hd:
                    want = 1
                elif dev < -hd:
                    want = 0
                elif k == 0 and (fon > 0.0 or foff > 0.0):
                    r = uniform_hash(seed, i, step0)
                    if s_on == 0 and r < fon:
                        want = 1
                    elif s_on == 1 and r < foff:
                        want = 0
            if want != s_on:
                lock = m_on if s_on == 1 else m_off
                if since >= lock or ovr or not avail:
                    if since < lock and avail:
                        lv += 1
                    s_on = want
                    since = 0.0
                    sw += 1
            t_ss = t_out_c[k] - s_on * g
            t = t_ss + (t - t_ss) * dec
            since += dt_s
            out = abs(t - ts) - cc
            if out > 0.0:
                dm += out * dt_min
            if s_on == 1:
                part_row[k] += pk
        t_in[i] = t
        on[i] = s_on
        since_s[i] = since
        switches[i] = sw
        comfort_dm[i] = dm
        lock_viol[i] = lv


_CHUNK = 512  # steps per pass: a block's per-step power sums stay in L1 cache


@njit(parallel=True, cache=True)
def advance_first_order(t_in, on, since_s, switches, comfort_dm, lock_viol,
                        decay, gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s, min_off_s,
                        t_offset, force, override, frac_on, frac_off, available,
                        t_out_c, dt_s, seed, step0, n_blocks, agg_kw):
    """Advance every device len(t_out_c) steps of dt_s; add per-step group power into agg_kw.

    decay = exp(-dt/(R*C)), gain_c = R*COP*P (steady-state temperature drop when on). State
    arrays (t_in, on, since_s, switches, comfort_dm, lock_viol) are updated in place.
    Unavailable devices draw nothing and their thermostat is frozen off (comm/power loss).
    """
    n = t_in.size
    n_steps = t_out_c.size
    part = np.zeros((n_blocks, n_steps))
    per = (n + n_blocks - 1) // n_blocks
    for blk in prange(n_blocks):
        lo = blk * per
        hi = min(n, lo + per)
        for k0 in range(0, n_steps, _CHUNK):
            _first_order_block(lo, hi, k0, min(n_steps, k0 + _CHUNK), part[blk], t_in, on,
                               since_s, switches, comfort_dm, lock_viol, decay, gain_c, p_kw, mode,
                               t_set, half_db, comfort_c, min_on_s, min_off_s, t_offset, force,
                               override, frac_on, frac_off, available, t_out_c, dt_s, seed, step0)
    for blk in range(n_blocks):
        for k in range(n_steps):
            agg_kw[k] += part[blk, k]


@njit(cache=True)
def advance_first_order_serial(t_in, on, since_s, switches, comfort_dm, lock_viol,
                               decay, gain_c, p_kw, mode, t_set, half_db, comfort_c, min_on_s,
                               min_off_s, t_offset, force, override, frac_on, frac_off, available,
                               t_out_c, dt_s, seed, step0, n_blocks, agg_kw):
    """`advance_first_order` on the calling thread: for small groups stepped one step at a
    time, where waking a thread pool costs more than the work (n_blocks is ignored)."""
    n_steps = t_out_c.size
    for k0 in range(0, n_steps, _CHUNK):
        _first_order_block(0, t_in.size, k0, min(n_steps, k0 + _CHUNK), agg_kw, t_in, on, since_s,
                           switches, comfort_dm, lock_viol, decay, gain_c, p_kw, mode, t_set,
                           half_db, comfort_c, min_on_s, min_off_s, t_offset, force, override,
                           frac_on, frac_off, available, t_out_c, dt_s, seed, step0)


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


def n_blocks_for(n: int) -> int:
    """Enough blocks to balance threads, few enough that per-block sums stay cheap."""
    from numba import get_num_threads

    return int(max(1, min(n, 8 * get_num_threads(), math.ceil(n / 256))))


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
