"""Load-reduction flexibility per device group: the uncontrolled baseline, the headroom a
device offers for a reduction held `hold_h` hours, and the setpoint that delivers a cut.

Used by the cycle to meet a DR event's requested reduction (device-level metered baseline:
delivered = baseline - measured power, summed over the devices that report good values) and
for the emergency shed. Everything is arrays per group; PV offers no load reduction.
"""

from __future__ import annotations

import numpy as np

from controller.dr.allocation import SETPOINT as _ALL_SETPOINTS
from controller.state import GroupState

# setpoint each per-device kind is steered with (TCL groups go through controller/tcl_dispatch.py)
SETPOINT = {k: v for k, v in _ALL_SETPOINTS.items() if k != "tcl"}
DR_KINDS = tuple(SETPOINT)


def baseline_kw(g: GroupState, base_set: np.ndarray | None = None,
                cf_need_kwh: np.ndarray | None = None, dt_h: float = 1 / 60) -> np.ndarray:
    """Power each device would draw without DR (load positive); NaN where unknown.
    EVs: full rate while the counterfactual need (`cf_need_kwh`, grid side, tracked from the
    event start by `ev_counterfactual`) lasts, else while the car reports a need."""
    if g.kind == "battery":
        return np.zeros(g.n) if base_set is None else np.asarray(base_set, float)
    if g.kind == "ev":
        p_max = g.rating("p_max_kw")
        conn = g.get("connected")
        if cf_need_kwh is not None:
            base = np.where(conn > 0.5, np.minimum(p_max, np.nan_to_num(cf_need_kwh) / dt_h), 0.0)
        else:
            need = g.get("e_need_kwh")
            base = np.where((conn > 0.5) & ~(need < 0.05), p_max, 0.0)  # unknown need: wants
        return np.where(np.isfinite(conn), base, np.nan)
    if g.kind == "flex_load":
        return g.get("p_base_kw")
    if g.kind == "pv":
        return -g.get("p_avail_kw")
    return g.get("p_kw")


def ev_counterfactual(g: GroupState, cf: np.ndarray | None) -> np.ndarray:
    """Grid-side energy each plugged-in car would still draw without DR: starts at its
    reported need when first seen during the event, forgotten when it leaves."""
    conn = g.get("connected") > 0.5
    need = g.get("e_need_kwh") / g.rating("eta", 0.92)
    cf = np.full(g.n, np.nan) if cf is None else cf.copy()
    new = conn & np.isnan(cf)
    cf[new] = np.where(np.isfinite(need[new]), need[new], np.inf)
    cf[~conn] = np.nan
    return cf


def headroom_kw(g: GroupState, baseline: np.ndarray, hold_h: float) -> np.ndarray:
    """Reduction each usable device can hold for hold_h hours (>= 0, 0 where unusable)."""
    usable = g.usable()
    if g.kind == "battery":
        p_max = g.rating("p_max_kw")
        soc = g.get("soc_kwh")
        soc_min = g.rating("soc_min_kwh", 0.0)
        eta = g.rating("eta_dis", 0.95)
        e_avail = np.maximum(soc - np.nan_to_num(soc_min), 0.0) * np.nan_to_num(eta, nan=0.95)
        p_energy = e_avail / max(hold_h, 1e-3)
        h = baseline + np.minimum(p_max, p_energy)
    elif g.kind in ("ev", "flex_load"):
        h = baseline * (g.rating("flex_share", 1.0) if g.kind == "flex_load" else 1.0)
    else:
        h = np.zeros(g.n)
    return np.where(usable & np.isfinite(h), np.maximum(h, 0.0), 0.0)


def setpoint_for_cut(g: GroupState, baseline: np.ndarray, cut_kw: np.ndarray) -> np.ndarray:
    """Setpoint values (SETPOINT[kind]) that reduce each device's power by cut_kw."""
    if g.kind == "battery":
        p_max = g.rating("p_max_kw")
        return np.clip(baseline - cut_kw, -p_max, p_max)
    if g.kind == "ev":
        p_max = g.rating("p_max_kw")
        return np.clip(np.nan_to_num(baseline) - cut_kw, 0.0, p_max)
    if g.kind == "flex_load":
        flex = np.nan_to_num(baseline) * g.rating("flex_share", 1.0)
        pct = np.divide(100.0 * cut_kw, flex, out=np.zeros(g.n), where=flex > 1e-9)
        return np.clip(pct, 0.0, 100.0)
    raise ValueError(f"group {g.group}: kind {g.kind!r} offers no load reduction")


def release_value(g: GroupState, base_set: np.ndarray | None = None) -> np.ndarray:
    """Setpoint that hands the device back to normal operation after an event."""
    if g.kind == "battery":
        return np.zeros(g.n) if base_set is None else np.asarray(base_set, float)
    if g.kind == "ev":
        return g.rating("p_max_kw")
    return np.zeros(g.n)


def allocate(need_kw: float, headroom: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Share `need_kw` over devices in proportion to their headroom (same fraction each), so
    losing one device costs little and the rest absorb the shortfall on the next cycle."""
    total = float(sum(h.sum() for h in headroom.values()))
    frac = 0.0 if total <= 1e-9 else min(max(need_kw, 0.0) / total, 1.0)
    return {g: frac * h for g, h in headroom.items()}


def delivered_kw(g: GroupState, baseline: np.ndarray, mask: np.ndarray) -> float:
    """Metered reduction of the masked devices: baseline - measured p_kw, good values only."""
    p = g.get("p_kw")
    ok = mask & np.isfinite(p) & np.isfinite(baseline)
    return float((baseline[ok] - p[ok]).sum())
