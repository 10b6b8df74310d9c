"""In-process controller for pure-simulation runs: a DirectLink over the twin's fleets, a
SteppedClock moved by the twin's SimPy time, and the real Controller cycle scheduled with
`twin.add_periodic(scenario.controller.cycle_s)`.

The scenario's DR events are handed to the controller as if a utility had sent them; the
controller's metered delivery ends up in summary.json under 'dr' and its cycle figures
under 'controller'.
"""

from __future__ import annotations

import numpy as np

from controller.clock import SteppedClock
from controller.core import Controller, CycleSettings
from controller.links.direct import DirectLink

RATINGS = {
    "battery": ("p_max_kw", "e_cap_kwh", "soc_min_kwh", "soc_max_kwh", "eta_ch", "eta_dis"),
    "pv": ("s_rated_kva", "p_peak_kw"),
    "ev": ("p_max_kw", "eta"),
    "flex_load": ("p_nom_kw", "flex_share"),
}


class TwinPort:
    """The duck-typed port DirectLink reads and writes (no twin import in controller/)."""

    def __init__(self, twin):
        self.fleets = twin.fleets

    def describe(self) -> dict:
        out = {}
        for name, f in self.fleets.items():
            ratings = {k: np.asarray(getattr(f, k), float) for k in RATINGS.get(f.KIND, ())
                       if hasattr(f, k)}
            out[name] = {"kind": f.KIND, "bus": f.bus, "ratings": ratings}
        return out

    def read(self) -> dict:
        return {name: f.telemetry() for name, f in self.fleets.items()}

    def available(self) -> dict:
        return {name: f.available for name, f in self.fleets.items()}

    def write(self, group: str, setpoint: str, index: int, value: float) -> None:
        f = self.fleets[group]
        if not f.available[index]:
            raise ValueError(f"{group}/{index} is offline")
        f.write(setpoint, index, value)  # SetpointError is a ValueError


class Attached:
    def __init__(self, controller: Controller, link: DirectLink):
        self.controller = controller
        self.link = link

    def finish(self, twin) -> None:
        c = self.controller
        twin.kpi_extra["dr"] = c.dr_summary()
        k = c.kpis()
        k["writes"] = self.link.writes
        k["writes_refused"] = self.link.refused
        sched = getattr(c.scheduler, "last_stats", None)
        if sched is not None:
            k["last_solve_s"] = round(sched.solve_s, 4)
        twin.kpi_extra["controller"] = k


def attach_controller(twin, historian=None) -> Attached:
    s = twin.scenario
    spec = s.controller
    t_start = s.start.timestamp()
    clock = SteppedClock(t_start)
    link = DirectLink(TwinPort(twin), clock)
    scheduler = None
    if spec.optimize_every_s > 0 and spec.objective in ("cost", "peak") and any(
            f.KIND == "battery" for f in twin.fleets.values()):
        from controller.scheduling import BatteryScheduler

        prices = twin.prices
        scheduler = BatteryScheduler(
            lambda times: np.array([prices.at(float(x) - t_start) for x in times]),
            objective=spec.objective)
    gate = None
    cfg = CycleSettings(cycle_s=spec.cycle_s, optimize_every_s=spec.optimize_every_s,
                        objective=spec.objective)
    ctl = Controller({g: link for g in twin.fleets}, clock, historian=historian, gate=gate,
                     settings=cfg, scheduler=scheduler)
    for ev in s.dr_events:
        ctl.add_dr_event(ev.id, ev.start.timestamp(), ev.duration_s, ev.reduction_kw, ev.groups,
                         source="scenario")

    def tick(tw):
        clock.advance_to(t_start + tw.t_s)
        ctl.cycle()

    twin.add_periodic(spec.cycle_s, tick)
    return Attached(ctl, link)
