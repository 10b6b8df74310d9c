"""The twin: feeder + DER fleets + weather advanced by one SimPy environment.

Per device step: physics of every fleet (vectorised), energy integration; at each
power-flow interval: injections summed per bus, AC power flow, measurements, limit checks;
at each output interval: one timeseries row. SimPy processes carry only discrete events
(EV plug-ins, DR event windows, faults, controller cycles).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import timedelta

import numpy as np
import simpy

from grid_models.feeders import build_feeder
from grid_models.power_flow import PowerFlow, PowerFlowResult
from scenarios.load import resolve_path
from twin.events import EventLog
from twin.fleet import Ambient, Fleet, build_fleet, place_devices
from twin.fleet.base import Ambients
from twin.fleet.pv import pv_ac_kw
from twin.profiles import CsvProfile, LocalClock, Prices, load_shape
from twin.recorder import Recorder
from twin.weather import Weather, wind_power_pu


@dataclass
class GridState:
    """Latest power-flow result and its measured (noisy) view, as devices/RTUs report it."""

    t_s: float = -1.0
    result: PowerFlowResult | None = None
    v_meas_pu: np.ndarray = field(default_factory=lambda: np.zeros(0))
    violations: list = field(default_factory=list)


class Twin:
    """One scenario's simulated world. `run()` for a whole run, `run_until()` for lockstep."""

    def __init__(self, scenario):
        self.scenario = s = scenario
        self.rng = np.random.default_rng(s.seed)
        self.dt_s = s.device_step_s
        self.pf_every = int(round(s.power_flow_interval_s / s.device_step_s))
        self.rec_every = max(1, int(round(s.outputs.timeseries_every_s / s.device_step_s)))
        self.n_steps = int(math.ceil(s.duration_s / s.device_step_s))
        fd = s.feeder
        self.net = build_feeder(fd.kind, fd.code,
                                resolve_path(s, fd.path) if fd.path else None, fd.with_der)
        self.fleets: dict[str, Fleet] = {}
        for g in s.fleet:
            rng = np.random.default_rng([s.seed, len(self.fleets)])
            bus = place_devices(g, self.net, rng)
            self.fleets[g.name] = build_fleet(g, bus, rng, s)
        der_buses = np.unique(np.concatenate([f.bus for f in self.fleets.values()] or [[]]))
        self.pf = PowerFlow(self.net, der_buses.astype(np.int64))
        self._slots = {n: np.searchsorted(self.pf.der_buses, f.bus) for n, f in self.fleets.items()}
        # the feeder's own generators: PV through the fleet's PV model, wind through the power
        # curve when the weather has a wind speed (else half its rating, as before), anything
        # else (biomass, hydro, CHP) held at half its rating
        sg = self.net.sgen
        self._sgen_rated_kw = self.pf._sgen_p * 1000.0
        sn_kw = sg["sn_mva"].to_numpy(float) * 1000.0 if "sn_mva" in sg else np.full(len(sg), np.nan)
        self._sgen_s_kva = np.where(np.isfinite(sn_kw) & (sn_kw > 0), np.maximum(sn_kw, self._sgen_rated_kw),
                                    self._sgen_rated_kw)
        kind = sg.type.astype(str).str.upper()
        self._sgen_pv = self.pf._sgen_is_pv
        self._sgen_wind = (kind.str.contains("WP") | kind.str.contains("WT") | kind.str.contains("WIND")).to_numpy()
        self.events = EventLog(s.start)
        self.weather = Weather(s.weather, s.start, s.duration_s, s.seed, lambda p: resolve_path(s, p))
        self.local_clock = LocalClock(s.start, getattr(s, "timezone", "UTC"))  # shapes, TOU: local clock
        self.prices = Prices(s.prices, s.start, lambda p: resolve_path(s, p), self.local_clock.timezone)
        self._base_csv = (CsvProfile(resolve_path(s, s.base_load.path), s.start, ["scale"],
                                     s.duration_s, s.base_load.extend)
                          if s.base_load.profile == "csv" else None)
        self._n_own_loads = len(self.pf._own_load_rows)
        self.grid = GridState()
        self.step_index = 0
        self.ambient = self._ambient(0.0)
        self.recorder = Recorder(self)
        self.after_step: list = []  # callables(twin) run after each device step (links, hooks)
        self.env = simpy.Environment()
        self.env.process(self._device_loop())
        for ev in s.dr_events:
            self.env.process(self._dr_window(ev))
        self.violation_intervals = 0
        self.failed_intervals = 0  # power flows that did not converge (also in events.jsonl)
        self._load_noise = None  # AR(1) state of the base-load noise, one value per own load
        self.violation_by_kind: dict[str, int] = {}
        self._active_violations: set = set()
        self.kpi_extra: dict = {}  # filled by attached parts (controller, TCL reference, ...)

    # --- time -------------------------------------------------------------------------------
    @property
    def t_s(self) -> float:
        return float(self.env.now)

    def utc(self, t_s: float | None = None):
        return self.scenario.start + timedelta(seconds=self.t_s if t_s is None else t_s)

    def _ambient(self, t_s: float) -> Ambient:
        w = self.weather
        return Ambient(t_s, w.ghi_w_m2(t_s), w.t_out_c(t_s), self.local_clock.hour(t_s), w.wind_m_s(t_s))

    def _ambients(self, t0_s: float, k: int) -> Ambients:
        """The k device steps from t0_s as arrays: one interpolation per quantity for the whole
        batch (the same values `_ambient` gives step by step)."""
        w = self.weather
        ts = t0_s + self.dt_s * np.arange(k)
        wind = np.interp(ts, w.t_s, w.wind) if w.wind is not None else np.full(k, math.nan)
        return Ambients(ts, np.interp(ts, w.t_s, w.ghi), np.interp(ts, w.t_s, w.t_out), wind,
                        self.local_clock.hours)

    def feeder_sgen_kw(self, amb: Ambient) -> np.ndarray:
        """Output of the feeder's own generators (kW, generation positive) at `amb`."""
        rated = self._sgen_rated_kw
        pv = pv_ac_kw(rated, self._sgen_s_kva, amb.ghi_w_m2, amb.t_out_c)
        wind = rated * (wind_power_pu(amb.wind_m_s) if np.isfinite(amb.wind_m_s) else 0.5)
        return np.where(self._sgen_pv, pv, np.where(self._sgen_wind, wind, 0.5 * rated))

    def base_load_scale(self, t_s: float) -> float:
        if self._base_csv is not None:
            return self._base_csv.at("scale", t_s)
        return self.scenario.feeder.base_load_scale * load_shape(self.scenario.base_load.profile,
                                                                  self.local_clock.hour(t_s))

    # --- processes ----------------------------------------------------------------------------
    batch = True  # advance quiet stretches of device steps in one call per fleet

    def _quiet_steps(self) -> int:
        """How many device steps from now can run as one batch: up to and including the next
        power-flow or sample step (its power flow and sample follow the batch), stopping
        before any other SimPy event; none with after_step hooks. Results equal the one-step
        loop (tests/test_twin_physics.py)."""
        i0 = self.step_index
        if not self.batch or self.after_step or i0 % self.pf_every == 0 or i0 % self.rec_every == 0:
            return 1
        nxt = self.env.peek()  # the next event of any other process
        limit = self.n_steps if nxt == float("inf") else min(self.n_steps, int(math.floor(nxt / self.dt_s + 1e-9)))
        # a fleet that polls real devices at the power-flow step needs that step's own time:
        # then the batch stops before it (the step runs alone)
        hold = int(any(getattr(f, "polls_at_power_flow", False) for f in self.fleets.values()))
        last = min(-(-i0 // self.pf_every) * self.pf_every - hold,
                   -(-i0 // self.rec_every) * self.rec_every - hold, limit - 1)
        return max(1, last - i0 + 1)

    def _device_loop(self):
        dt = self.dt_s
        while self.step_index < self.n_steps:
            k = self._quiet_steps()
            if k > 1:  # k device steps in one call per fleet, then the last step's grid work
                ambs = self._ambients(self.env.now, k)
                for f in self.fleets.values():
                    f.advance(dt, ambs)
                self.step_index += k - 1
                yield self.env.timeout((k - 1) * dt)
                self.ambient = self._ambient(self.env.now)
            else:
                self.ambient = amb = self._ambient(self.env.now)
                for f in self.fleets.values():
                    f.step(dt, amb)
                    f.integrate(dt)
            if self.step_index % self.pf_every == 0:
                self.solve_power_flow()
            if self.step_index % self.rec_every == 0:
                self.recorder.sample()
            for hook in self.after_step:
                hook(self)
            self.step_index += 1
            yield self.env.timeout(dt)

    def _dr_window(self, ev):
        t0 = (ev.start - self.scenario.start).total_seconds()
        if t0 > 0:
            yield self.env.timeout(t0)
        self.events.log(self.env.now, "dr_event_start", event_id=ev.id, reduction_kw=ev.reduction_kw,
                        duration_s=ev.duration_s, groups=ev.groups)
        yield self.env.timeout(ev.duration_s)
        self.events.log(self.env.now, "dr_event_end", event_id=ev.id)

    def add_periodic(self, period_s: float, fn, offset_s: float = 0.0) -> None:
        """Call fn(twin) every period_s of simulated time (e.g. a controller cycle)."""

        def proc():
            if offset_s:
                yield self.env.timeout(offset_s)
            while True:
                fn(self)
                yield self.env.timeout(period_s)

        self.env.process(proc())

    # --- grid -----------------------------------------------------------------------------------
    def der_injections(self) -> tuple[np.ndarray, np.ndarray]:
        """DER P and Q summed per DER bus (kW/kvar, load convention)."""
        m = len(self.pf.der_buses)
        p = np.zeros(m)
        q = np.zeros(m)
        for name, f in self.fleets.items():
            p += np.bincount(self._slots[name], weights=f.p_kw, minlength=m)
            q += np.bincount(self._slots[name], weights=f.q_kvar, minlength=m)
        return p, q

    NOISE_TAU_S = 900.0  # correlation time of the base-load noise (a load wanders, it does not jump)

    def base_load_noise(self) -> np.ndarray | None:
        """Per-load multiplicative factor: AR(1) around 1 with std noise_pct and a 15-minute
        correlation time, advanced by the power-flow interval (seeded, reproducible)."""
        sd = self.scenario.base_load.noise_pct / 100.0
        if not sd:
            return None
        if self._load_noise is None:
            self._load_noise = sd * self.rng.standard_normal(self._n_own_loads)
        else:
            a = math.exp(-self.scenario.power_flow_interval_s / self.NOISE_TAU_S)
            self._load_noise = a * self._load_noise + sd * math.sqrt(1 - a * a) * self.rng.standard_normal(
                self._n_own_loads)
        return 1.0 + self._load_noise

    def solve_power_flow(self) -> PowerFlowResult:
        s = self.scenario
        p, q = self.der_injections()
        per_row = self.base_load_noise()
        res = self.pf.run(p, q, load_scale=self.base_load_scale(self.env.now), load_scale_per_row=per_row,
                          sgen_p_kw=self.feeder_sgen_kw(self.ambient))
        if not res.converged:
            self.failed_intervals += 1
            self.events.log(self.env.now, "power_flow_failed", interval=self.pf.runs,
                            head_der_kw=round(float(p.sum()), 3))
        g = self.grid
        g.t_s, g.result = float(self.env.now), res
        sd = s.measurement.v_noise_pu_std
        g.v_meas_pu = res.v_pu + (sd * self.rng.standard_normal(res.v_pu.size) if sd else 0.0)
        g.violations = self.pf.violations(res, s.feeder.limits)
        if not res.converged:  # counted as failed_intervals, not as a limit violation
            self._active_violations = set()
            return res
        active = {(v.kind, v.element) for v in g.violations}
        for v in g.violations:
            if (v.kind, v.element) not in self._active_violations:
                self.events.log(self.env.now, "violation", violation=v.kind, element=v.element,
                                value=round(v.value, 4), limit=v.limit)
        self._active_violations = active
        if g.violations:
            self.violation_intervals += 1
            for kind in {v.kind for v in g.violations}:
                self.violation_by_kind[kind] = self.violation_by_kind.get(kind, 0) + 1
        return res

    # --- running ---------------------------------------------------------------------------------
    def run_until(self, t_s: float) -> None:
        """Advance simulated time to t_s (lockstep coordinators call this step by step)."""
        t_s = min(t_s, self.end_s)
        if t_s > self.env.now:
            self.env.run(until=t_s)

    @property
    def end_s(self) -> float:
        return self.n_steps * self.dt_s

    @property
    def finished(self) -> bool:
        return self.step_index >= self.n_steps

    def run(self, progress=None) -> None:
        """Run to the end; `progress(done_s, total_s)` is called about 200 times."""
        # progress chunks of whole power-flow intervals, each ending just after a power-flow
        # step: a chunk end is an event and would cut the batched device steps short
        pf_s = self.scenario.power_flow_interval_s
        chunk = pf_s * max(1, math.ceil(max(self.dt_s, self.end_s / 200.0) / pf_s))
        c = 0
        t = 0.0
        while t < self.end_s:
            c += 1
            t = min(c * chunk + self.dt_s, self.end_s)
            self.run_until(t)
            if progress:
                progress(t, self.end_s)
