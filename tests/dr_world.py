"""A small controller for DR and OpenADR tests: twelve batteries (5 kW, 20 kWh) behind a
DirectLink over an in-memory port that follows every p_set_kw at once, the real Controller
cycle on a SteppedClock (PassThroughGate, asked for by name: no feeder here)."""

from __future__ import annotations

import numpy as np

from controller.clock import SteppedClock
from controller.commands import PassThroughGate
from controller.core import Controller, CycleSettings
from controller.links.direct import DirectLink

T0 = 1_780_000_000.0


class BatteryPort:
    def __init__(self, n: int = 12):
        self.n = n
        self.p_kw = np.zeros(n)
        self.soc_kwh = np.full(n, 12.0)

    def describe(self) -> dict:
        return {"home_batteries": {"kind": "battery", "bus": np.zeros(self.n, np.int64), "ratings": {
            "p_max_kw": np.full(self.n, 5.0), "e_cap_kwh": np.full(self.n, 20.0),
            "soc_min_kwh": np.full(self.n, 2.0), "soc_max_kwh": np.full(self.n, 20.0)}}}

    def read(self) -> dict:
        return {"home_batteries": {"p_kw": self.p_kw.copy(), "soc_kwh": self.soc_kwh.copy()}}

    def write(self, group, setpoint, index, value) -> None:
        if setpoint == "p_set_kw":
            self.p_kw[index] = float(value)


def dr_controller(t0: float = T0) -> tuple[Controller, BatteryPort, SteppedClock]:
    port, clock = BatteryPort(), SteppedClock(t0)
    link = DirectLink(port, clock)
    ctl = Controller({"home_batteries": link}, clock, PassThroughGate(),
                     settings=CycleSettings(cycle_s=60.0, optimize_every_s=1e18))
    ctl.cycle(t0)
    return ctl, port, clock


def run_until(ctl: Controller, clock: SteppedClock, t_end: float) -> None:
    t = clock.now()
    while t + 60.0 <= t_end:
        t += 60.0
        clock.advance_to(t)
        ctl.cycle(t)
