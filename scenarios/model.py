"""Pydantic models of a scenario file: the product's main input.

Every field carries its unit in its name; validation errors are turned into one-line
messages by `scenarios.load` (file, key path, what was expected).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator


class Strict(BaseModel):
    """Base for every scenario section: unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(extra="forbid")


# --- parameter distributions -------------------------------------------------------------


class Uniform(Strict):
    dist: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.high < self.low:
            raise ValueError(f"high ({self.high}) must be >= low ({self.low})")
        return self


class Normal(Strict):
    dist: Literal["normal"]
    mean: float
    std: float = Field(ge=0)
    min: float | None = None
    max: float | None = None


class Choice(Strict):
    dist: Literal["choice"]
    values: list[float] = Field(min_length=1)
    weights: list[float] | None = None


Distribution = Annotated[Uniform | Normal | Choice, Field(discriminator="dist")]
Param = Union[float, Distribution]


# --- feeder --------------------------------------------------------------------------------


class Limits(Strict):
    """Operating limits the twin reports violations of (and the safety gate enforces)."""

    v_min_pu: float = Field(0.95, gt=0.5, lt=1.5)
    v_max_pu: float = Field(1.05, gt=0.5, lt=1.5)
    line_loading_max_pct: float = Field(100.0, gt=0)
    trafo_loading_max_pct: float = Field(100.0, gt=0)

    @model_validator(mode="after")
    def _band(self):
        if self.v_max_pu <= self.v_min_pu:
            raise ValueError(f"v_max_pu ({self.v_max_pu}) must exceed v_min_pu ({self.v_min_pu})")
        return self


class Feeder(Strict):
    """Which network to simulate: a built-in, a SimBench code or a pandapower JSON file."""

    kind: Literal["cigre_mv", "cigre_lv", "simbench", "pandapower_json"]
    code: str | None = Field(None, description="SimBench code, e.g. 1-MV-rural--0-sw")
    path: str | None = Field(None, description="pandapower JSON file, relative to the scenario")
    with_der: bool = Field(True, description="keep the feeder's own sgens/storage (CIGRE MV 'pv_wind')")
    base_load_scale: float = Field(1.0, ge=0, description="multiplier on the feeder's own loads")
    limits: Limits = Limits()

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "simbench" and not self.code:
            raise ValueError("kind 'simbench' needs 'code' (e.g. 1-MV-rural--0-sw)")
        if self.kind == "pandapower_json" and not self.path:
            raise ValueError("kind 'pandapower_json' needs 'path'")
        return self


# --- fleet ---------------------------------------------------------------------------------


class Placement(Strict):
    """How devices of a group are spread over buses."""

    rule: Literal["load_buses", "all_buses", "buses", "lv_buses"] = "load_buses"
    buses: list[int] | None = Field(None, description="bus indices for rule 'buses'")

    @model_validator(mode="after")
    def _needs(self):
        if self.rule == "buses" and not self.buses:
            raise ValueError("rule 'buses' needs a non-empty 'buses' list")
        return self


class SecureChannel(Strict):
    """Setpoints for a real device go as signed envelopes through a lab command gateway
    (hil/command_gateway.py); key files are relative to the scenario file, never in the repo."""

    gateway: str = Field(description="host:port of the command gateway (loopback)")
    key_file: str | None = Field(None, description="controller's Ed25519 private key (PEM, mode 600)")
    gateway_pubkey_file: str | None = Field(None, description="JSON {gateway name: hex public key}, mode 600")
    encrypt: bool = True
    name: str = Field("controller", description="controller name the gateway trusts")

    @field_validator("gateway")
    @classmethod
    def _loopback_host_port(cls, v: str) -> str:
        host, _, port = v.rpartition(":")
        if not host.startswith("127.") or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError(f"gateway must be a loopback host:port (127.0.0.0/8), got {v!r}")
        return v


class RealEndpoint(Strict):
    """A physical (or separately started) device the twin reads back instead of emulating."""

    host: str
    port: int = Field(ge=1, le=65535)
    unit: int = Field(1, ge=0, le=255)
    map: str = Field(description="register map name or file")
    secure: SecureChannel | None = Field(None, description="controller writes go through a command gateway")

    @field_validator("host")
    @classmethod
    def _loopback_or_name(cls, v: str) -> str:
        if not v:
            raise ValueError("host must not be empty")
        return v


class FleetGroup(Strict):
    name: str
    kind: Literal["pv", "battery", "ev", "tcl", "flex_load"]
    count: int = Field(ge=0, le=10_000_000)
    placement: Placement = Placement()
    params: dict[str, Param] = Field(default_factory=dict)
    link: Literal["direct", "modbus", "iec104"] = "direct"
    endpoint: Literal["emulated"] | RealEndpoint = "emulated"
    gateway: bool = Field(False, description="modbus: one port, many unit ids, instead of a port each")
    record_devices: int = Field(0, ge=0, description="per-device series kept for the first N devices")


# --- exogenous inputs ----------------------------------------------------------------------


class Weather(Strict):
    """Synthetic clear-sky irradiance with a seeded cloud process, or a CSV."""

    kind: Literal["synthetic", "csv"] = "synthetic"
    path: str | None = None
    latitude_deg: float = Field(48.0, ge=-90, le=90)
    longitude_deg: float = Field(11.0, ge=-180, le=180)
    cloudiness: float = Field(0.2, ge=0, le=1, description="0 clear, 1 overcast")
    t_out_mean_c: float = 20.0
    t_out_swing_c: float = Field(8.0, ge=0)

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "csv" and not self.path:
            raise ValueError("kind 'csv' needs 'path' (columns: time, ghi_w_m2, t_out_c)")
        return self


class BaseLoad(Strict):
    profile: Literal["residential", "commercial", "flat", "csv"] = "residential"
    path: str | None = None
    noise_pct: float = Field(2.0, ge=0, description="per-bus multiplicative noise, % std")


class TouPeriod(Strict):
    start_h: float = Field(ge=0, lt=24)
    end_h: float = Field(gt=0, le=24)
    price_eur_per_mwh: float


class Prices(Strict):
    kind: Literal["tou", "csv"] = "tou"
    path: str | None = None
    base_eur_per_mwh: float = 80.0
    periods: list[TouPeriod] = Field(default_factory=list)


class DrEvent(Strict):
    """A demand-response event the controller is asked to deliver."""

    id: str
    start: datetime
    duration_s: float = Field(gt=0)
    reduction_kw: float = Field(gt=0, description="requested reduction against baseline")
    groups: list[str] | None = Field(None, description="fleet groups to use; all if omitted")


class FaultSpec(Strict):
    """A scheduled fault on an emulated device or link (see device_emulators.faults)."""

    at_s: float = Field(ge=0, description="seconds after scenario start")
    duration_s: float = Field(gt=0)
    kind: Literal["latency", "drop", "exception", "freeze", "wrong_scale", "refuse",
                  "reset", "iec104_link_loss", "iec104_invalid"]
    target: str = Field(description="fleet group name, group:index, or 'rtu'")
    value: float | None = Field(None, description="latency in s, exception code, scale factor, ...")


class Measurement(Strict):
    v_noise_pu_std: float = Field(0.0, ge=0)
    p_noise_pct_std: float = Field(0.0, ge=0)


class Assertion(Strict):
    """A check on summary.json: `kpi op value`; a failed one makes the run exit 1."""

    kpi: str = Field(description="dotted path into summary.json, e.g. voltage.max_pu")
    op: Literal["<", "<=", ">", ">=", "=="]
    value: float


class ControllerSpec(Strict):
    """The VPP controller attached to the run (none: the twin runs open loop)."""

    enabled: bool = False
    cycle_s: float = Field(60.0, gt=0)
    optimize_every_s: float = Field(900.0, gt=0)
    objective: Literal["cost", "peak", "dr"] = "cost"
    safety_gate: bool = True


class Regulation(Strict):
    """TCL tracking experiment: identify the group's models from telemetry, predict a held-out
    window, then follow baseline*(1 + amplitude*r(t)) with a regulation-style signal r."""

    group: str = Field(description="fleet group of kind 'tcl'")
    amplitude_pct: float = Field(10.0, gt=0, le=50, description="reference swing, % of baseline")
    step_s: float = Field(4.0, gt=0, description="reference and controller cycle period")
    identify_s: float = Field(3600.0, gt=0, description="uncontrolled identification window from t=0")
    holdout_s: float = Field(3600.0, ge=0, description="held-out window for model accuracy")
    duration_s: float = Field(3600.0, gt=0, description="regulation window, after the held-out one")
    signal_tau_s: float = Field(120.0, gt=0, description="correlation time of the signal")
    lockout_s: float = Field(300.0, ge=0, description="lockout the controller assumes per device")
    bins: int = Field(20, ge=2, le=500, description="temperature bins of the Markov model")
    seed: int = 0


class HilAction(Strict):
    """Something the HIL coordinator does to the running controller at a scenario time."""

    at_s: float = Field(ge=0, description="seconds after scenario start")
    action: Literal["restart_controller", "emergency_shed", "emergency_restore"]
    reason: str = ""


class HilSpec(Strict):
    """How `gridtwin hil` runs this scenario: lockstep (faster than real time) or real time."""

    mode: Literal["lockstep", "realtime"] = "lockstep"
    actions: list[HilAction] = Field(default_factory=list)
    cycle_timeout_s: float = Field(30.0, gt=0, description="wall seconds a controller cycle may take")


class Outputs(Strict):
    timeseries_every_s: float = Field(60.0, gt=0, description="sampling of timeseries.parquet")
    report: bool = True


class Scenario(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    start: datetime
    duration_s: float = Field(gt=0, le=366 * 86400)
    device_step_s: float = Field(1.0, gt=0)
    power_flow_interval_s: float = Field(60.0, gt=0)
    seed: int = 0
    feeder: Feeder
    fleet: list[FleetGroup] = Field(default_factory=list)
    weather: Weather = Weather()
    base_load: BaseLoad = BaseLoad()
    prices: Prices = Prices()
    dr_events: list[DrEvent] = Field(default_factory=list)
    faults: list[FaultSpec] = Field(default_factory=list)
    measurement: Measurement = Measurement()
    controller: ControllerSpec = ControllerSpec()
    outputs: Outputs = Outputs()
    assertions: list[Assertion] = Field(default_factory=list)
    regulation: Regulation | None = None
    hil: HilSpec = HilSpec()
    _source_dir: Path | None = PrivateAttr(None)

    @field_validator("start")
    @classmethod
    def _utc(cls, v: datetime) -> datetime:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)

    @model_validator(mode="after")
    def _consistent(self):
        if self.power_flow_interval_s < self.device_step_s:
            raise ValueError("power_flow_interval_s must be >= device_step_s")
        ratio = self.power_flow_interval_s / self.device_step_s
        if abs(ratio - round(ratio)) > 1e-9:
            raise ValueError("power_flow_interval_s must be a multiple of device_step_s")
        names = [g.name for g in self.fleet]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"fleet group names must be unique, repeated: {sorted(dup)}")
        for ev in self.dr_events:
            for g in ev.groups or []:
                if g not in names:
                    raise ValueError(f"dr event {ev.id!r} names unknown fleet group {g!r}")
        return self

    @model_validator(mode="after")
    def _regulation_fits(self):
        r = self.regulation
        if r is None:
            return self
        kinds = {g.name: g.kind for g in self.fleet}
        if kinds.get(r.group) != "tcl":
            raise ValueError(f"regulation.group {r.group!r} must name a fleet group of kind 'tcl'")
        end = r.identify_s + r.holdout_s + r.duration_s
        if end > self.duration_s + 1e-9:
            raise ValueError(f"regulation windows end at {end:g} s, after duration_s {self.duration_s:g}")
        if r.step_s < self.device_step_s:
            raise ValueError("regulation.step_s must be >= device_step_s")
        return self
