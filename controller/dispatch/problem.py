"""Data contract of the dispatch optimizer: what a solve needs (`DispatchProblem`) and what it
returns (`Schedule`).

Plain dataclasses of numpy arrays, so the controller runtime can fill them from telemetry and
forecasts without touching Pyomo. Conventions: powers in kW with load positive and generation
negative at the bus; energies in kWh; time index k = 0..n_steps-1 covers [t0 + k*step_s,
t0 + (k+1)*step_s). Every device array is optional (None or an empty block = that class is
absent). Device ids are "<group>/<index>".

The feeder head power the optimizer controls is

    head_p_kw[k] = net_load_forecast_kw[k] + sum over every device below of its p_kw[k]

so `net_load_forecast_kw` is the head flow WITHOUT the devices listed here (uncontrolled load
and uncontrolled generation only). PV devices here contribute -(available - curtailed).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


class ProblemError(ValueError):
    """A DispatchProblem whose arrays are inconsistent; the message names field and shape."""


def _arr(x, n=None, name="", dtype=float) -> np.ndarray:
    a = np.asarray(x, dtype=dtype)
    if n is not None and a.shape[0] != n:
        raise ProblemError(f"{name}: expected length {n}, got shape {a.shape}")
    return a


@dataclass
class Batteries:
    """Stationary batteries. p > 0 charges. SOC dynamics:
    soc[k+1] = soc[k] + (eta_ch * ch[k] - dis[k] / eta_dis) * step_h."""

    device_ids: list[str]
    bus: np.ndarray  # int, pandapower bus index
    p_max_kw: np.ndarray
    e_cap_kwh: np.ndarray
    soc_kwh: np.ndarray  # now (start of step 0)
    soc_min_kwh: np.ndarray
    soc_max_kwh: np.ndarray
    eta_ch: np.ndarray
    eta_dis: np.ndarray
    deg_cost_eur_per_kwh: np.ndarray  # per kWh of throughput (charge + discharge)
    # SOC wanted at the end of the horizon (default: soc_kwh, i.e. energy-neutral). The
    # real-time loop passes the day-ahead plan's SOC at its horizon end. Shortfall is allowed
    # at a penalty (weights.soc_end_eur_per_kwh) so the problem stays feasible.
    soc_end_min_kwh: np.ndarray | None = None

    @property
    def n(self) -> int:
        return len(self.device_ids)


@dataclass
class PvUnits:
    """Curtailable PV. `p_avail_kw[d, k]` >= 0 is the forecast available AC power."""

    device_ids: list[str]
    bus: np.ndarray
    p_avail_kw: np.ndarray  # shape (n_devices, n_steps)
    s_rated_kva: np.ndarray | None = None  # base of the p_limit_pct setpoint; default max avail

    @property
    def n(self) -> int:
        return len(self.device_ids)


@dataclass
class EvSessions:
    """Plugged-in EVs (smart charging, 0 <= p <= p_max_kw while connected). The car wants
    `e_need_kwh` (energy into the battery, charger efficiency `eta`) by the start of step
    `departure_step` (>= n_steps means after the horizon: only what cannot be delivered after
    the horizon at full power is required within it)."""

    device_ids: list[str]
    bus: np.ndarray
    p_max_kw: np.ndarray
    e_need_kwh: np.ndarray
    departure_step: np.ndarray  # int
    connected: np.ndarray  # bool; not connected = p fixed to 0
    eta: np.ndarray | None = None  # default 0.92 (twin default)

    @property
    def n(self) -> int:
        return len(self.device_ids)


@dataclass
class TclBattery:
    """The TCL fleet's virtual battery (controller.aggregation produces these). Aggregate power
    p[k] in [p_min_kw[k], p_max_kw[k]]; stored thermal energy
    e[k+1] = e[k] + (p[k] - p_base_kw[k]) * step_h within [e_min_kwh, e_max_kwh].
    With p_base_kw = 0 the bounds are deviations from baseline instead of absolute powers."""

    name: str  # group name; its schedule is reported under device id "<name>/*"
    bus: int
    p_min_kw: np.ndarray  # (n_steps,)
    p_max_kw: np.ndarray
    e_min_kwh: float
    e_max_kwh: float
    e0_kwh: float
    p_base_kw: np.ndarray | None = None  # default zeros


@dataclass
class FlexLoads:
    """Curtailable loads. p = p_base - cut + payback, 0 <= cut <= flex_share * p_base; a
    `rebound` fraction of the curtailed energy is owed and paid back later at up to
    `payback_max_kw` (twin: 0.3 * p_nom). Curtailment costs weights.flex_eur_per_kwh."""

    device_ids: list[str]
    bus: np.ndarray
    p_base_kw: np.ndarray  # (n_devices, n_steps) forecast
    flex_share: np.ndarray
    rebound: np.ndarray
    payback_max_kw: np.ndarray
    owed_kwh: np.ndarray | None = None  # energy already owed now; default zeros

    @property
    def n(self) -> int:
        return len(self.device_ids)


@dataclass
class GridSensitivity:
    """Linearised grid constraints (built by grid_models.sensitivity). Columns are the buses
    in `buses`; the DER net load at those buses, P_bus[b, k] (kW, load positive), moves
    v[m, k] = v0_pu[m, k] + dv_dp_pu_per_kw[m, :] @ P_bus[:, k]
    loading[l, k] = loading0_pct[l, k] + dload_dp_pct_per_kw[l, :] @ P_bus[:, k]
    where v0/loading0 are the forecast with every device of the problem at zero power."""

    buses: np.ndarray  # int (n_b,)
    dv_dp_pu_per_kw: np.ndarray  # (n_m, n_b)
    v0_pu: np.ndarray  # (n_m, n_steps)
    v_min_pu: float = 0.95
    v_max_pu: float = 1.05
    dload_dp_pct_per_kw: np.ndarray | None = None  # (n_l, n_b)
    loading0_pct: np.ndarray | None = None  # (n_l, n_steps)
    loading_max_pct: float = 100.0


@dataclass
class Weights:
    """Objective weights. Money terms in EUR; penalties are EUR per kWh (or kW) of violation."""

    energy: float = 1.0  # multiplier on sum(price * head energy)
    dr_shortfall_eur_per_kwh: float = 2.0  # DR target missed (>> any price)
    peak_eur_per_kw: float = 0.0  # on max(head) over the horizon (peak shaving)
    peak_limit_eur_per_kwh: float = 5.0  # head above peak_limit_kw
    export_limit_eur_per_kwh: float = 5.0  # export beyond export_limit_kw
    flex_eur_per_kwh: float = 0.05  # discomfort of curtailing flexible load
    flex_owed_end_eur_per_kwh: float | None = None  # energy still owed at the end (None: mean price)
    pv_curtail_eur_per_kwh: float = 0.001  # tie-breaker: keep PV unless it pays to curtail
    ev_unmet_eur_per_kwh: float = 5.0  # EV energy missing at departure
    soc_end_eur_per_kwh: float = 0.5  # battery SOC below soc_end_min at the horizon end
    tcl_end_eur_per_kwh: float = 0.5  # TCL energy below e0 at the horizon end
    grid_eur_per_unit: float = 1e4  # per pu of voltage / per % of loading outside limits


@dataclass
class DispatchProblem:
    t0: float  # epoch seconds UTC of the start of step 0
    step_s: float  # 900 day-ahead, 300 real-time
    n_steps: int
    prices_eur_per_mwh: np.ndarray  # (n_steps,)
    net_load_forecast_kw: np.ndarray  # (n_steps,) head without the devices below
    batteries: Batteries | None = None
    pv: PvUnits | None = None
    evs: EvSessions | None = None
    tcls: list[TclBattery] = field(default_factory=list)
    flex: FlexLoads | None = None
    dr_reduction_kw: np.ndarray | None = None  # (n_steps,), nan where no event
    dr_baseline_kw: np.ndarray | None = None  # head baseline; target = baseline - reduction
    peak_limit_kw: float | None = None
    export_limit_kw: float | None = None  # most the head may export (head >= -limit), soft
    # steps kept for a demand-response event (bool, (n_steps,)): there the plan leaves batteries
    # idle and flexible loads / TCLs at their baseline, and each battery enters the window with
    # enough energy to discharge at full power through it, so the DR program gets the whole
    # flexibility measured against an unchanged plan
    reserve_steps: np.ndarray | None = None
    grid: GridSensitivity | None = None
    weights: Weights = field(default_factory=Weights)

    @property
    def step_h(self) -> float:
        return self.step_s / 3600.0

    def validate(self) -> DispatchProblem:
        """Check shapes and obvious nonsense; raise ProblemError naming the field."""
        n = self.n_steps
        if n < 1 or self.step_s <= 0:
            raise ProblemError(f"n_steps={n}, step_s={self.step_s}: both must be positive")
        _arr(self.prices_eur_per_mwh, n, "prices_eur_per_mwh")
        _arr(self.net_load_forecast_kw, n, "net_load_forecast_kw")
        b = self.batteries
        if b is not None and b.n:
            for f in ("bus", "p_max_kw", "e_cap_kwh", "soc_kwh", "soc_min_kwh", "soc_max_kwh",
                      "eta_ch", "eta_dis", "deg_cost_eur_per_kwh"):
                _arr(getattr(b, f), b.n, f"batteries.{f}")
            if np.any(np.asarray(b.soc_min_kwh) > np.asarray(b.soc_max_kwh)):
                raise ProblemError("batteries.soc_min_kwh: above soc_max_kwh for some device")
            if np.any(np.asarray(b.eta_ch) <= 0) or np.any(np.asarray(b.eta_dis) <= 0):
                raise ProblemError("batteries.eta_ch/eta_dis: must be > 0")
        if self.pv is not None and self.pv.n:
            a = np.asarray(self.pv.p_avail_kw)
            if a.shape != (self.pv.n, n):
                raise ProblemError(f"pv.p_avail_kw: expected shape {(self.pv.n, n)}, got {a.shape}")
        e = self.evs
        if e is not None and e.n:
            for f in ("bus", "p_max_kw", "e_need_kwh", "departure_step", "connected"):
                _arr(getattr(e, f), e.n, f"evs.{f}")
        for t in self.tcls:
            _arr(t.p_min_kw, n, f"tcls[{t.name}].p_min_kw")
            _arr(t.p_max_kw, n, f"tcls[{t.name}].p_max_kw")
            if t.e_min_kwh > t.e_max_kwh:
                raise ProblemError(f"tcls[{t.name}].e_min_kwh: above e_max_kwh")
        f = self.flex
        if f is not None and f.n:
            a = np.asarray(f.p_base_kw)
            if a.shape != (f.n, n):
                raise ProblemError(f"flex.p_base_kw: expected shape {(f.n, n)}, got {a.shape}")
        if self.reserve_steps is not None:
            _arr(self.reserve_steps, n, "reserve_steps", bool)
        if self.dr_reduction_kw is not None:
            _arr(self.dr_reduction_kw, n, "dr_reduction_kw")
            if self.dr_baseline_kw is None:
                raise ProblemError("dr_baseline_kw: required when dr_reduction_kw is given")
            _arr(self.dr_baseline_kw, n, "dr_baseline_kw")
        g = self.grid
        if g is not None:
            s = np.asarray(g.dv_dp_pu_per_kw)
            if s.shape[1] != len(g.buses) or np.asarray(g.v0_pu).shape != (s.shape[0], n):
                raise ProblemError("grid: dv_dp_pu_per_kw must be (n_m, n_buses) and v0_pu (n_m, n_steps)")
        return self


@dataclass
class SolveStats:
    status: str  # "optimal" or the solver's termination condition
    variables: int
    constraints: int
    build_s: float  # model build or parameter update
    solve_s: float
    n_groups: int = 0  # aggregated device groups the LP saw
    n_devices: int = 0
    reused_model: bool = False  # real-time: persistent model updated in place


@dataclass
class Schedule:
    """The optimizer's answer. `p_kw[device_id]` is the planned power per step (load
    convention); TCL aggregates appear as "<name>/*". `setpoints` gives, for step 0, the
    setpoint the device understands (battery p_set_kw, pv p_limit_pct, ev p_max_set_kw,
    flex curtail_pct) as (device_id, setpoint, value) tuples ready for controller.commands."""

    t0: float
    step_s: float
    p_kw: dict[str, np.ndarray]
    head_p_kw: np.ndarray
    soc_kwh: dict[str, np.ndarray]  # battery SOC at step ends, per device (after disaggregation)
    objective_terms: dict[str, float]  # EUR per term
    stats: SolveStats
    setpoints: list[tuple[str, str, float]] = field(default_factory=list)
    dr_shortfall_kw: np.ndarray | None = None
    disagg_residual_kw: float = 0.0  # aggregate power the devices could not take (should be ~0)

    @property
    def objective_eur(self) -> float:
        return float(sum(self.objective_terms.values()))
