"""TCL groups in the controller cycle: baseline, reduction margin, virtual-battery bounds and
the switching law that turns a requested reduction (kW) into `force` commands.

Per TCL group a `TclGroupModel` watches telemetry every cycle (p_kw, on, t_in_c; t_set_c,
t_out_c and the ratings p_rated_kw, deadband_c, comfort_c, min_on_s where the link gives
them, defaults otherwise). It keeps:
- a lockout clock from the on/off changes it sees (a unit seen switching is taken to have
  switched at that cycle: conservative);
- the DR baseline: the per-unit mean power over the `baseline_window_s` before the event
  starts, frozen for the event (a pre-event mean: the population's own duty cycle on a
  slowly changing afternoon, no model error; the identified virtual battery's prediction is
  reported beside it as `vb_baseline_kw`);
- an online ETP identification (controller.aggregation.EtpIdentifier) when t_out_c is
  reported, and from it a VirtualBattery: energy stored between the units' temperature and
  their comfort limit, power bounds up/down.

The dispatch law holds units off (`force` -1, kept while they stay held) closed loop on the
group's measured power: target = baseline - cut. Too much power: the coolest running units
past their minimum on-time are held off; too little: the held units nearest their comfort
limit are released. A held unit is always released before it leaves its comfort band, so
comfort costs nothing beyond what the thermostat alone would cause, and the twin's own lockout
is never asked to be overridden (no `override` writes).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from controller.aggregation import EtpIdentifier, VirtualBattery
from controller.commands import Command
from controller.emergency import TclGroup

DEFAULTS = {"p_rated_kw": np.nan, "t_set_c": np.nan, "deadband_c": 0.5, "comfort_c": 1.0,
            "min_on_s": 300.0, "min_off_s": 300.0, "mode": 1.0}


@dataclass
class TclSettings:
    baseline_window_s: float = 900.0  # pre-event mean window
    guard_c: float = 0.15  # release a held unit this far inside its comfort limit
    fallback_tau_s: float = 4 * 3600.0  # thermal time constant before identification
    fallback_share: float = 0.3  # share of baseline offered before a model is identified
    min_identified: float = 0.5  # share of identified units needed to trust the model
    rebound_cap_frac: float = 0.1  # after an event, power may exceed its baseline by this share


class TclGroupModel:
    """The controller's view of one TCL group (arrays indexed like the group's ids)."""

    def __init__(self, g, settings: TclSettings | None = None):
        self.group = g.group
        self.n = g.n
        self.cfg = settings or TclSettings()
        self.r = {k: np.nan_to_num(g.rating(k, d), nan=d) if np.isfinite(d) else g.rating(k, d)
                  for k, d in DEFAULTS.items()}
        self.p_rated_kw = self.r["p_rated_kw"].copy()  # filled from telemetry where unknown
        self.mode = np.where(self.r["mode"] < 0, -1.0, 1.0)
        self.last_switch_s = np.full(self.n, np.nan)
        self.first_seen_s: float | None = None
        self.prev_on: np.ndarray | None = None
        self.held = np.zeros(self.n, bool)  # units this controller holds off
        self.hist: deque = deque()  # (t, per-unit p_kw) for the pre-event baseline
        self.ident = EtpIdentifier(self.n)
        self.vb: VirtualBattery | None = None
        self.t_out_c = np.nan
        self.t_set_c = self.r["t_set_c"].copy()
        self._t_sum = np.zeros(self.n)  # running mean of t_in_c: the setpoint where none is reported
        self._t_cnt = np.zeros(self.n)
        self.t_in_c = np.full(self.n, np.nan)
        self.on = np.zeros(self.n, bool)
        self.p_kw = np.zeros(self.n)
        self.usable = np.ones(self.n, bool)
        self.t = np.nan
        self.n_obs = 0
        self.log: dict[str, list] = {}  # event id -> [(t, requested cut, metered)]
        self.refused = False  # the safety gate rejects `force` (unknown setpoint): stay out

    # --- telemetry ---------------------------------------------------------------------------
    def observe(self, t: float, g) -> None:
        self.t = t
        self.usable = g.usable()
        p = g.get("p_kw")
        on = g.get("on")
        on = np.where(np.isfinite(on), on > 0.5, np.nan_to_num(p) > 1e-6)
        self.p_kw, self.on = np.nan_to_num(p), on
        self.t_in_c = g.get("t_in_c")
        ts = g.get("t_set_c")
        seen = np.isfinite(self.t_in_c)
        self._t_sum[seen] += self.t_in_c[seen]
        self._t_cnt[seen] += 1
        with np.errstate(invalid="ignore"):
            held_at = self._t_sum / self._t_cnt  # a thermostat holds the room's mean at its setpoint
        self.t_set_c = np.where(np.isfinite(ts), ts, np.where(np.isfinite(self.r["t_set_c"]),
                                                              self.r["t_set_c"], held_at))
        running = on & np.isfinite(p) & (p > 0)
        est = np.where(running, p, np.nan)
        self.p_rated_kw = np.where(np.isfinite(self.r["p_rated_kw"]), self.r["p_rated_kw"],
                                   np.fmax(self.p_rated_kw, est))
        if self.prev_on is None:
            self.first_seen_s = t
        else:
            self.last_switch_s[on != self.prev_on] = t
        self.prev_on = on.copy()
        self.hist.append((t, np.where(np.isfinite(p), p, np.nan)))
        while self.hist and self.hist[0][0] < t - self.cfg.baseline_window_s - 1e-9:
            self.hist.popleft()
        t_out = float(np.nanmean(g.get("t_out_c"))) if "t_out_c" in g.values else np.nan
        self.t_out_c = t_out
        ok = np.isfinite(self.t_in_c).all() and np.isfinite(t_out)
        if ok and not self.held.any():  # identify on free-running thermostats only
            self.ident.update(t, self.t_in_c, on, np.nan_to_num(p), t_out)
        elif ok:
            self.ident._prev = None
        self.n_obs += 1
        if self.n_obs % 10 == 0 and ok:
            est = self.ident.estimate(self.t_set_c)
            if est.identified.mean() >= self.cfg.min_identified:
                self.vb = VirtualBattery.from_estimate(est, self.t_set_c)

    # --- derived ---------------------------------------------------------------------------------
    def unlocked(self, t: float, on_state: bool) -> np.ndarray:
        """Units free to switch now (past min on- or off-time as this controller saw them)."""
        ref = self.first_seen_s if self.first_seen_s is not None else t
        since = np.where(np.isnan(self.last_switch_s), t - ref, t - self.last_switch_s)
        lock = self.r["min_on_s"] if on_state else self.r["min_off_s"]
        return since >= lock

    def lock_remaining_s(self, t: float) -> np.ndarray:
        ref = self.first_seen_s if self.first_seen_s is not None else t
        since = np.where(np.isnan(self.last_switch_s), t - ref, t - self.last_switch_s)
        return np.where(self.on, np.maximum(self.r["min_on_s"] - since, 0.0), 0.0)

    def comfort_room_c(self) -> np.ndarray:
        """Degrees each unit may still drift (away from cooling) before its comfort limit."""
        lim = self.t_set_c + self.mode * self.r["comfort_c"]
        return np.nan_to_num(self.mode * (lim - self.t_in_c), nan=0.0)

    def mean_kw(self) -> np.ndarray:
        """Per-unit mean power over the pre-event window (NaN where never seen)."""
        if not self.hist:
            return np.full(self.n, np.nan)
        with np.errstate(invalid="ignore"):
            return np.nanmean(np.vstack([h for _, h in self.hist]), axis=0)

    def kwh_per_c(self) -> np.ndarray | None:
        """Electric energy per degree of drift per unit (C/COP = P/b), from the identified model."""
        if self.vb is None:
            return None
        return self.vb.p_rated_kw / self.vb.b_c_per_s / 3600.0

    def energy_kwh(self) -> float | None:
        """Virtual-battery charge: energy the usable units can shed before their comfort limits."""
        k = self.kwh_per_c()
        if k is None:
            return None
        return float((np.maximum(self.comfort_room_c() - self.cfg.guard_c, 0.0) * k)[self.usable].sum())

    def headroom_kw(self, base: np.ndarray, hold_h: float) -> np.ndarray:
        """Reduction per unit that can be held hold_h hours: the baseline, limited by the energy
        between each unit's temperature and its comfort limit (fallback: a fixed share)."""
        b = np.where(self.usable & ~self.refused, np.nan_to_num(base), 0.0)
        k = self.kwh_per_c()
        if k is None:
            return self.cfg.fallback_share * b
        e = np.maximum(self.comfort_room_c() - self.cfg.guard_c, 0.0) * k
        # a population rotates: the group's energy spread over its units in proportion to base
        tot = float(b.sum())
        share = b / tot if tot > 0 else b
        return np.minimum(b, share * float(e[self.usable].sum()) / max(hold_h, 1e-3))

    def flexibility(self) -> dict:
        """Virtual-battery bounds now: up/down kW around the current draw, energy kWh."""
        p_max = float(np.nan_to_num(self.p_rated_kw)[self.usable].sum())
        p_now = float(self.p_kw[self.usable].sum())
        out = {"up_kw": round(max(p_max - p_now, 0.0), 3), "down_kw": round(p_now, 3),
               "energy_kwh": None, "e_max_kwh": None, "vb_baseline_kw": None}
        if self.vb is not None:
            e = self.energy_kwh()
            out["energy_kwh"] = round(e, 3)
            k = self.kwh_per_c()
            span = (self.r["comfort_c"] * 2.0 * k)[self.usable].sum()
            out["e_max_kwh"] = round(float(span), 3)
            if np.isfinite(self.t_out_c):
                out["vb_baseline_kw"] = round(float(self.vb.baseline_kw(self.t_out_c)), 3)
        return out

    def summary(self) -> dict:
        """API fields: mean indoor temperature, comfort share, on share, power, flexibility."""
        u = self.usable & np.isfinite(self.t_in_c)
        inside = np.abs(self.t_in_c - self.t_set_c) <= self.r["comfort_c"] + 1e-9
        n_u = int(u.sum())
        return {"t_in_c": round(float(self.t_in_c[u].mean()), 3) if n_u else None,
                "comfort_pct": round(100.0 * float(inside[u].mean()), 2) if n_u else None,
                "on_pct": round(100.0 * float(self.on[self.usable].mean()), 2) if self.usable.any() else None,
                "held_off": int(self.held.sum()),
                "gate_refused": self.refused,
                "flexibility": self.flexibility()}

    # --- dispatch ---------------------------------------------------------------------------------
    def dispatch(self, t: float, base: np.ndarray, cut_kw: float, source: str, reason: str
                 ) -> list[Command]:
        """Commands that move the group's power toward sum(base) - cut_kw."""
        if self.refused:
            self.held[:] = False
            return []
        u = self.usable
        room = self.comfort_room_c()
        release = self.held & (~u | (room <= self.cfg.guard_c))
        held = self.held & ~release
        p = self.p_kw
        target = float(np.nan_to_num(base)[u].sum()) - max(cut_kw, 0.0)
        # power expected next: held units that are still on go off once unlocked
        expect = float(p[u].sum()) - float(p[held & self.on].sum())
        adds = self.release_adds_kw()
        expect += float(adds[release & ~self.on].sum())
        err = expect - target
        if err > 0:
            cand = np.flatnonzero(u & ~held & self.on & self.unlocked(t, True)
                                  & (room > self.cfg.guard_c + 0.1))
            order = cand[np.argsort(-room[cand])]  # most comfort room first
            cum = np.cumsum(p[order])
            k = int(np.searchsorted(cum, err))
            k = min(k + 1, order.size) if k < order.size and (k == 0 or cum[k] - err < err - cum[k - 1]) else k
            held[order[:k]] = True
        elif err < 0 and held.any():
            cand = np.flatnonzero(held)
            order = cand[np.argsort(room[cand])]  # closest to the comfort limit first
            cum = np.cumsum(adds[order])
            k = int(np.searchsorted(cum, -err, side="right"))
            held[order[:k]] = False
            release |= self.held & ~held
        release &= ~held
        self.held = held
        return self.commands(source, reason, release)

    def commands(self, source: str, reason: str, release: np.ndarray | None = None) -> list[Command]:
        out = [Command(f"{self.group}/{int(j)}", "force", -1.0, source, reason)
               for j in np.flatnonzero(self.held)]
        if release is not None:
            out += [Command(f"{self.group}/{int(j)}", "force", 0.0, source, reason + " released")
                    for j in np.flatnonzero(release)]
        return out

    def release_all(self, source: str, reason: str, cohort: int | None = None) -> list[Command]:
        """Hand held units back to their thermostats (at most `cohort` this call, warmest first)."""
        idx = np.flatnonzero(self.held)
        if cohort is not None and idx.size > cohort:
            idx = idx[np.argsort(self.comfort_room_c()[idx])][:cohort]
        rel = np.zeros(self.n, bool)
        rel[idx] = True
        self.held &= ~rel
        return [Command(f"{self.group}/{int(j)}", "force", 0.0, source, reason) for j in idx]

    def release_adds_kw(self) -> np.ndarray:
        """Power each unit draws once released: its rating where it sits at or past its
        thermostat's switch-on edge (the thermostat turns it on), else 0."""
        edge = self.t_set_c + self.mode * self.r["deadband_c"] / 2.0
        return np.where(self.mode * (self.t_in_c - edge) >= 0, self.p_rated_kw, 0.0)

    def release_capped(self, base: np.ndarray, source: str, reason: str) -> list[Command]:
        """After an event (call once per cycle until none is held): release held units only as
        fast as keeps the group under its baseline plus `rebound_cap_frac` (the payback of the
        deferred cooling is spread out instead of arriving at once); a unit at its comfort
        guard, or no longer usable, is released regardless, so comfort always wins."""
        u = self.usable
        room = self.comfort_room_c()
        held = self.held & u & (room > self.cfg.guard_c)
        forced = self.held & ~held
        adds = self.release_adds_kw()
        b = float(np.nan_to_num(base)[u].sum())
        room_kw = b * (1.0 + self.cfg.rebound_cap_frac) - float(self.p_kw[u].sum()) - float(adds[forced].sum())
        cand = np.flatnonzero(held)
        order = cand[np.argsort(room[cand])]  # closest to the comfort limit first
        k = int(np.searchsorted(np.cumsum(adds[order]), max(room_kw, 0.0), side="right"))
        held[order[:k]] = False
        held &= adds > 0  # a unit inside its deadband adds nothing when released: let it go now
        release = self.held & ~held
        self.held = held
        return [Command(f"{self.group}/{int(j)}", "force", 0.0, source, reason) for j in np.flatnonzero(release)]

    def emergency_commands(self, t: float) -> list[Command]:
        """Hold every usable unit off that still has comfort room; release the rest."""
        if self.refused:
            return []
        room = self.comfort_room_c()
        want = self.usable & (room > self.cfg.guard_c)
        release = self.held & ~want
        self.held = want
        return self.commands("emergency", "shed", release)

    def tcl_group(self, t: float) -> TclGroup:
        """This group as controller.emergency sees it (hold time from the comfort band)."""
        tau = 1.0 / self.vb.a_per_s if self.vb is not None else np.full(self.n, self.cfg.fallback_tau_s)
        t_eq = np.full(self.n, self.t_out_c if np.isfinite(self.t_out_c) else np.nan)
        t_eq = np.where(np.isfinite(t_eq), t_eq, self.t_set_c + self.mode * 10.0)
        lim = self.t_set_c + self.mode * (self.r["comfort_c"] - self.cfg.guard_c)
        return TclGroup(self.group, self.p_kw * self.on, self.on, np.nan_to_num(self.t_in_c, nan=lim),
                        lim, t_eq, tau, self.mode, self.lock_remaining_s(t), self.usable.copy())


class TclDispatcher:
    """All TCL groups of a controller: built from its FleetState, fed every cycle."""

    def __init__(self, state, settings: TclSettings | None = None):
        self.models = {name: TclGroupModel(g, settings) for name, g in state.groups.items()
                       if g.kind == "tcl"}

    def __bool__(self) -> bool:
        return bool(self.models)

    def observe(self, t: float, state) -> None:
        for name, m in self.models.items():
            m.observe(t, state.groups[name])

    def baseline(self, name: str) -> np.ndarray:
        """Per-unit pre-event mean power (the DR baseline; frozen by the caller at event start)."""
        m = self.models[name]
        b = m.mean_kw()
        return np.where(np.isfinite(b), b, m.p_kw)

    def tcl_groups(self, t: float) -> list[TclGroup]:
        return [m.tcl_group(t) for m in self.models.values() if not m.refused]

    def margin_kw(self) -> float:
        """Reduction available now: the power of usable running units."""
        return float(sum(m.p_kw[m.usable & m.on].sum() for m in self.models.values() if not m.refused))

    def note_gate(self, result) -> list[str]:
        """Groups whose `force` commands the safety gate rejects as an unknown setpoint or device
        (a gate that does not model TCLs): they leave DR and emergency use; returns the newly refused."""
        new = []
        for d in result.decisions:
            c = d.command
            if (c.setpoint != "force" or d.verdict != "rejected"
                    or not {"unknown_setpoint", "unknown_device"} & set(d.reasons)):
                continue
            m = self.models.get(c.device_id.rpartition("/")[0])
            if m is not None and not m.refused:
                m.refused = True
                m.held[:] = False
                new.append(m.group)
        return new

    def summary(self) -> dict:
        return {name: m.summary() for name, m in self.models.items()}

    def record(self, event_id: str, name: str, t: float, cut_kw: float, base: np.ndarray) -> None:
        """One event cycle of a group: the TCL share requested now and the metered reduction
        now (baseline - measured power of usable units: the answer to the previous request)."""
        m = self.models[name]
        u = m.usable
        metered = float(np.nan_to_num(base)[u].sum() - m.p_kw[u].sum())
        m.log.setdefault(event_id, []).append((t, cut_kw, metered))

    def event_report(self, event_id: str) -> dict:
        """Per TCL group: mean requested share and mean metered delivery over the event (each
        request is paired with the metering one cycle later)."""
        out = {}
        for name, m in self.models.items():
            rows = np.asarray(m.log.get(event_id, []), float).reshape(-1, 3)
            if rows.shape[0] < 2:
                continue
            req, met = rows[:-1, 1], rows[1:, 2]
            out[name] = {"requested_kw": round(float(req.mean()), 3), "delivered_kw": round(float(met.mean()), 3),
                         "baseline_kw": None, "cycles": int(req.size)}
        return out
