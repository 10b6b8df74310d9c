"""Export limit command source: the schedule plans the feeder head within `export_limit_kw`,
but it plans on forecasts, 15 minutes at a time. This source holds the limit in real time on
the head meter: while the feeder exports more than `limit - margin`, every usable PV inverter
gets the same cap `p_limit_pct` (a share of its rating), corrected each cycle by the metered
error in kW (integral action: as much generation off as the meter shows beyond the target,
as much back on as there is room); once the cap is back at 100 % it is released. A cap lower
than the schedule's own for the device (negative prices) is never raised by this source.

Without a head meter reading (missing, not good) the cap in force is held, not released.
Commands go through the safety gate like every other source's.
"""

from __future__ import annotations

import logging

import numpy as np

from controller.commands import Command
from controller.kinds import KINDS

log = logging.getLogger("controller.export_limit")


class ExportLimitSource:
    name, priority = "export_limit", 2.2  # above volt/VAR and the schedule, below DR, operator, emergency

    def __init__(self, ctl, limit_kw: float, margin_kw: float | None = None):
        self.ctl = ctl  # hist, schedule_src (the plan's own PV caps)
        self.limit_kw = float(limit_kw)
        self.margin_kw = max(0.5, 0.03 * self.limit_kw) if margin_kw is None else float(margin_kw)
        self.cap_pct: float | None = None  # the PV cap in force (None: not limiting)
        self.last: dict = {}

    def _head_kw(self, state) -> float | None:
        p = [float(v) for g in state.groups.values() if g.kind == "meter" for v in g.get("p_kw")]
        p = [x for x in p if np.isfinite(x)]
        return sum(p) if p else None

    def commands(self, t: float, state) -> list[Command]:
        pv = [g for g in state.groups.values() if g.kind == "pv" and g.n]
        head = self._head_kw(state)
        if not pv or (head is None and self.cap_pct is None):
            return []
        kind = KINDS["pv"]
        rated = sum(float(np.nansum(kind.size_kw(g)[g.usable()])) for g in pv)
        if head is not None and rated > 0:
            room_kw = (self.limit_kw - self.margin_kw) + head  # > 0: may export this much more
            if self.cap_pct is None:
                if head >= -self.limit_kw:
                    return []
                gen = -sum(float(np.nansum(np.where(g.usable(), g.get("p_kw"), 0.0))) for g in pv)
                self.cap_pct = 100.0 * max(gen + room_kw, 0.0) / rated
                self.ctl.hist.log_event(t, "export_limit_active", head_kw=round(head, 3),
                                        limit_kw=self.limit_kw, cap_pct=round(self.cap_pct, 3))
            else:
                self.cap_pct = max(self.cap_pct + 100.0 * room_kw / rated, 0.0)
        release = self.cap_pct >= 100.0
        self.last = {"t": t, "head_kw": head, "cap_pct": min(self.cap_pct, 100.0), "released": release}
        out = []
        for g in pv:
            mine = np.full(g.n, min(self.cap_pct, 100.0))
            planned = self.ctl.schedule_src.planned(g.group, "p_limit_pct")
            if planned is not None:
                mine = np.fmin(mine, planned)  # the plan's own, lower cap stands
            out += [Command(g.ids[j], "p_limit_pct", float(mine[j]), self.name,
                            "export limit released" if release else "export limit")
                    for j in np.flatnonzero(g.usable())]
        if release:
            self.cap_pct = None
            self.ctl.hist.log_event(t, "export_limit_released", head_kw=None if head is None else round(head, 3))
        return out
