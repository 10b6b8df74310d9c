"""Pydantic models of a scenario file: the product's main input.

Every field carries its unit in its name; validation errors are turned into one-line
messages by `scenarios.load` (file, key path, what was expected).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal, Union
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

MAX_DEVICE_STEPS = 10**8  # more needs --allow-long: at ~1e5 steps/s that is over 15 minutes
MAX_DURATION_S = 366 * 86400
MAX_DEVICES = 10_000_000  # over all fleet groups
SEED_MAX = 2**32 - 1  # numpy's legacy seed range; every generator here accepts it


class At(ValueError):
    """A model-level check that names the key it is about (relative to the model that raised
    it) and its value; scenarios.load puts the path into the one-line message."""

    def __init__(self, path: str, msg: str, value=None, show: bool = True):
        super().__init__(msg)
        self.path, self.value, self.show = path, value, show and value is not None


YEARS = (1900, 2200)  # keeps every time + duration sum inside datetime's range


def _utc(v: datetime) -> datetime:
    if not YEARS[0] <= v.year <= YEARS[1]:
        raise ValueError(f"year must be {YEARS[0]}..{YEARS[1]}, got {v.year}")
    return v.replace(tzinfo=UTC) if v.tzinfo is None else v.astimezone(UTC)


def iana_zone(v: str) -> str:
    """`v` when it names an IANA time zone the machine knows (a pydantic field validator)."""
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError("unknown IANA time zone (e.g. UTC, Europe/Berlin, America/New_York)") from None
    return v


def _path_only_for_csv(section, is_csv: bool):
    """A CSV path or extend option on a section that does not read a CSV would be ignored."""
    if section.path and not is_csv:
        raise At("path", "is used only with a CSV source (kind/profile 'csv')", section.path)
    if section.extend != "none" and not is_csv:
        raise At("extend", "is used only with a CSV source (kind/profile 'csv')", section.extend)
    return section


Extend = Literal["none", "hold", "cycle"]
EXTEND_HELP = ("a CSV must cover the run window (none); or hold its first/last value (hold), "
               "or repeat it (cycle)")


class Strict(BaseModel):
    """Base for every scenario section: unknown keys are errors (typos must not pass)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


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

    @model_validator(mode="after")
    def _ordered(self):
        if self.min is not None and self.max is not None and self.max < self.min:
            raise At("max", f"max ({self.max:g}) must be >= min ({self.min:g})", self.max, show=False)
        return self


class Choice(Strict):
    dist: Literal["choice"]
    values: list[float] = Field(min_length=1, max_length=100_000)
    weights: list[float] | None = None

    @model_validator(mode="after")
    def _weights(self):
        w = self.weights
        if w is None:
            return self
        if len(w) != len(self.values):
            raise At("weights", f"needs one weight per value ({len(self.values)}), got {len(w)}")
        if min(w) < 0 or sum(w) <= 0:
            raise At("weights", "weights must be >= 0 and not all 0", w)
        return self


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
            raise At("code", "kind 'simbench' needs 'code' (e.g. 1-MV-rural--0-sw)")
        if self.kind == "pandapower_json" and not self.path:
            raise At("path", "kind 'pandapower_json' needs 'path'")
        if self.code and self.kind != "simbench":
            raise At("code", f"is used only with kind 'simbench' (kind is {self.kind!r})", self.code)
        if self.path and self.kind != "pandapower_json":
            raise At("path", f"is used only with kind 'pandapower_json' (kind is {self.kind!r})", self.path)
        return self


# --- fleet ---------------------------------------------------------------------------------


class Placement(Strict):
    """How devices of a group are spread over buses."""

    rule: Literal["load_buses", "all_buses", "buses", "lv_buses"] = "load_buses"
    buses: list[Annotated[int, Field(ge=0)]] | None = Field(None, description="bus indices for rule 'buses'")

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


class Emulation(Strict):
    """How the group's emulated devices present themselves (device_emulators): identity and
    the behaviour of real field devices a client can tell an emulator by. Unset identity
    fields take per-kind defaults that look like a product line."""

    manufacturer: str | None = Field(None, max_length=32, description="SunSpec 1 Mn / Modbus VendorName")
    model: str | None = Field(None, max_length=32, description="SunSpec 1 Md / Modbus ProductCode")
    serial_pattern: str = Field("{prefix}{serial:08d}", max_length=32,
                                description="SunSpec 1 SN; fields prefix, serial (seeded 8 digits), index")
    firmware: str | None = Field(None, max_length=16, description="SunSpec 1 Vr / MajorMinorRevision")
    refresh_s: float = Field(1.0, gt=0, le=3600, description="measurements update every N s (device refresh)")
    max_connections: int = Field(0, ge=0, le=1000, description="simultaneous TCP connections a device accepts (0: any)")
    min_request_interval_s: float = Field(0.0, ge=0, le=60,
                                          description="requests closer than this get exception 06 (busy)")
    noise_p_pct: float = Field(0.1, ge=0, le=5, description="measured W/VAr noise, std in % of the reading "
                               "(seeded per device and refresh; 0: exact values)")
    noise_v_pct: float = Field(0.02, ge=0, le=5, description="measured voltage noise, std in % of the reading")
    noise_hz: float = Field(0.001, ge=0, le=0.5, description="measured frequency noise, std in Hz")
    p_response_s: float = Field(2.0, ge=0, le=300, description="open-loop response time (IEEE 1547-2018: "
                                "90 % of a step) of active-power setpoints written by a client: WMaxLimPct, "
                                "storage charge/discharge rates; 0: immediate")
    q_response_s: float = Field(2.0, ge=0, le=300, description="open-loop response time of reactive-power "
                                "setpoints (constant PF, VAr); 0: immediate")


class HeadMeter(Strict):
    """The feeder-head revenue meter the emulators serve (meter/head): it belongs to no fleet
    group, so its identity, refresh and measurement noise are set here."""

    emulation: Emulation = Emulation()


class FleetGroup(Strict):
    name: str
    kind: Literal["pv", "battery", "ev", "tcl", "flex_load"]
    count: int = Field(ge=0, le=MAX_DEVICES)
    placement: Placement = Placement()
    params: dict[str, Param] = Field(default_factory=dict)
    link: Literal["direct", "modbus", "iec104"] = "direct"
    endpoint: Literal["emulated"] | RealEndpoint = "emulated"
    gateway: bool = Field(False, description="modbus: one port, many unit ids, instead of a port each")
    record_devices: int = Field(0, ge=0, description="per-device series kept for the first N devices")
    emulation: Emulation = Emulation()


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
    wind_mean_m_s: float | None = Field(
        None, ge=0, le=30, description="mean hub-height wind speed of the synthetic weather (m/s); drives "
        "the feeder's wind generators through a power curve (cut-in 3, rated 12, cut-out 25 m/s). "
        "Unset: wind generators at half rating. CSV weather: optional column wind_speed_m_s")
    extend: Extend = Field("none", description=EXTEND_HELP)

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "csv" and not self.path:
            raise At("path", "kind 'csv' needs 'path' (columns: time, ghi_w_m2, t_out_c)")
        return _path_only_for_csv(self, self.kind == "csv")


class BaseLoad(Strict):
    profile: Literal["residential", "commercial", "flat", "csv"] = "residential"
    path: str | None = Field(None, description="CSV with columns time, scale (profile 'csv')")
    noise_pct: float = Field(2.0, ge=0, le=100, description="multiplicative noise per load row, % std, "
                             "AR(1) with a 15-min correlation time")
    extend: Extend = Field("none", description=EXTEND_HELP)

    @model_validator(mode="after")
    def _needs(self):
        if self.profile == "csv" and not self.path:
            raise At("path", "profile 'csv' needs 'path' (columns: time, scale)")
        return _path_only_for_csv(self, self.profile == "csv")


class TouPeriod(Strict):
    start_h: float = Field(ge=0, lt=24)
    end_h: float = Field(gt=0, le=24)
    price_eur_per_mwh: float

    @model_validator(mode="after")
    def _ordered(self):
        if self.end_h <= self.start_h:
            raise At("end_h", f"end_h ({self.end_h:g}) must exceed start_h ({self.start_h:g}); "
                     "split a period across midnight in two", show=False)
        return self


class Prices(Strict):
    kind: Literal["tou", "csv"] = "tou"
    path: str | None = Field(None, description="CSV with columns time, price_eur_per_mwh (kind 'csv')")
    base_eur_per_mwh: float = 80.0
    periods: list[TouPeriod] = Field(default_factory=list, max_length=1000)
    extend: Extend = Field("none", description=EXTEND_HELP)

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "csv" and not self.path:
            raise At("path", "kind 'csv' needs 'path' (columns: time, price_eur_per_mwh)")
        return _path_only_for_csv(self, self.kind == "csv")


class DrEvent(Strict):
    """A demand-response event the controller is asked to deliver."""

    id: str
    start: datetime
    duration_s: float = Field(gt=0, le=MAX_DURATION_S)
    reduction_kw: float = Field(gt=0, description="requested reduction against baseline")
    groups: list[str] | None = Field(None, description="fleet groups to use; all if omitted")

    _utc_start = field_validator("start")(classmethod(lambda cls, v: _utc(v)))


class FaultSpec(Strict):
    """A scheduled fault on an emulated device or link (see device_emulators.faults)."""

    at_s: float = Field(ge=0, description="seconds after scenario start")
    duration_s: float = Field(gt=0, le=MAX_DURATION_S)
    kind: Literal["latency", "drop", "exception", "freeze", "wrong_scale", "refuse",
                  "reset", "iec104_link_loss", "iec104_invalid"]
    target: str = Field(description="fleet group name, group:index, 'meter' or 'rtu'")
    value: float | None = Field(None, description="latency in s, exception code, scale factor, ...")


class Measurement(Strict):
    v_noise_pu_std: float = Field(0.0, ge=0)
    p_noise_pct_std: float = Field(0.0, ge=0)


class Assertion(Strict):
    """A check on summary.json: `kpi op value`; a failed one makes the run exit 1."""

    kpi: str = Field(description="dotted path into summary.json, e.g. voltage.max_pu")
    op: Literal["<", "<=", ">", ">=", "=="]
    value: float

    @field_validator("kpi")
    @classmethod
    def _dotted(cls, v: str) -> str:
        if not v or any(not part for part in v.split(".")):
            raise ValueError(f"kpi must be a dotted path like voltage.max_pu, got {v!r}")
        return v


class ControllerSpec(Strict):
    """The VPP controller attached to the run (none: the twin runs open loop)."""

    enabled: bool = False
    cycle_s: float = Field(60.0, gt=0)
    optimize_every_s: float = Field(900.0, gt=0)
    objective: Literal["cost", "peak", "dr"] = "cost"
    safety_gate: bool = True
    export_limit_kw: float | None = Field(
        None, gt=0, description="most the feeder head may export (kW); the schedule plans within it and "
        "the controller caps PV in real time on the head meter beyond it (none: no limit)")


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
    seed: int = Field(0, ge=0, le=SEED_MAX)


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
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$", max_length=100)
    description: str = ""
    start: datetime
    timezone: str = Field(
        "UTC", max_length=64, description="IANA time zone (e.g. Europe/Berlin) of the local clock: "
        "base-load and flex-load shapes, EV arrival hours and TOU price periods are local clock time "
        "in it, daylight saving included (a 23- or 25-hour day); sun and outdoor temperature follow "
        "solar time at weather.longitude_deg. Absolute times (start, dr_events, CSV time columns) "
        "are UTC unless they carry an offset. Default UTC")
    duration_s: float = Field(gt=0, le=MAX_DURATION_S)
    device_step_s: float = Field(1.0, gt=0)
    power_flow_interval_s: float = Field(60.0, gt=0)
    seed: int = Field(0, ge=0, le=SEED_MAX, description="0 .. 2**32-1")
    feeder: Feeder
    fleet: list[FleetGroup] = Field(default_factory=list, max_length=1000)
    weather: Weather = Weather()
    base_load: BaseLoad = BaseLoad()
    prices: Prices = Prices()
    dr_events: list[DrEvent] = Field(default_factory=list, max_length=10_000)
    faults: list[FaultSpec] = Field(default_factory=list, max_length=10_000)
    measurement: Measurement = Measurement()
    head_meter: HeadMeter = HeadMeter()
    controller: ControllerSpec = ControllerSpec()
    outputs: Outputs = Outputs()
    assertions: list[Assertion] = Field(default_factory=list, max_length=1000)
    regulation: Regulation | None = None
    hil: HilSpec = HilSpec()
    _source_dir: Path | None = PrivateAttr(None)

    _utc_start = field_validator("start")(classmethod(lambda cls, v: _utc(v)))

    _iana = field_validator("timezone")(classmethod(lambda cls, v: iana_zone(v)))

    @model_validator(mode="after")
    def _bounded(self, info: ValidationInfo):
        """Refuse runs that would not finish: too many device steps (or controller cycles)."""
        if (info.context or {}).get("allow_long"):
            return self
        counts = [("device_step_s", self.device_step_s)]
        if self.controller.enabled:
            counts.append(("controller.cycle_s", self.controller.cycle_s))
        for key, step in counts:
            n = self.duration_s / step
            if n > MAX_DEVICE_STEPS:
                raise At(key, f"{step:g} s over duration_s {self.duration_s:g} makes {n:.3g} steps, more "
                         f"than {MAX_DEVICE_STEPS:.0e} (pass --allow-long to run it anyway)", show=False)
        return self

    @model_validator(mode="after")
    def _consistent(self):
        if self.power_flow_interval_s < self.device_step_s:
            raise At("power_flow_interval_s", f"must be >= device_step_s ({self.device_step_s:g})",
                     self.power_flow_interval_s)
        ratio = self.power_flow_interval_s / self.device_step_s
        if abs(ratio - round(ratio)) > 1e-9:
            raise At("power_flow_interval_s", f"must be a multiple of device_step_s ({self.device_step_s:g})",
                     self.power_flow_interval_s)
        names = [g.name for g in self.fleet]
        total = sum(g.count for g in self.fleet)
        if total > MAX_DEVICES:
            raise At("fleet", f"{total:,} devices in all, more than {MAX_DEVICES:,}", show=False)
        for i, n in enumerate(names):
            if n in names[:i]:
                raise At(f"fleet[{i}].name", "fleet group names must be unique", n)
            if self.controller.enabled and self.fleet[i].count == 0:
                raise At(f"fleet[{i}].count", "must be at least 1 while controller.enabled is true "
                         "(the controller links every group)", 0)
        ids = [ev.id for ev in self.dr_events]
        end = self.start + timedelta(seconds=self.duration_s)
        for i, ev in enumerate(self.dr_events):
            if ev.id in ids[:i]:
                raise At(f"dr_events[{i}].id", "dr event ids must be unique", ev.id)
            for j, g in enumerate(ev.groups or []):
                if g not in names:
                    raise At(f"dr_events[{i}].groups[{j}]", f"unknown fleet group {g!r}; fleet groups: "
                             f"{', '.join(names) or 'none'}", show=False)
            ev_end = ev.start + timedelta(seconds=ev.duration_s)
            if ev_end <= self.start or ev.start >= end:
                raise At(f"dr_events[{i}].start", f"event {ev.id!r} ({ev.start:%Y-%m-%d %H:%M} UTC for "
                         f"{ev.duration_s:g} s) lies outside the run window {self.start:%Y-%m-%d %H:%M} .. "
                         f"{end:%Y-%m-%d %H:%M} UTC", show=False)
        counts = {g.name: g.count for g in self.fleet}
        for i, f in enumerate(self.faults):
            if f.at_s >= self.duration_s:
                raise At(f"faults[{i}].at_s", f"after the run ends (duration_s {self.duration_s:g})", f.at_s)
            group, _, index = f.target.partition(":")
            if group in ("rtu", "meter") and not index:
                continue
            if group not in counts:
                raise At(f"faults[{i}].target", f"names no fleet group; fleet groups: "
                         f"{', '.join(names) or 'none'} (or 'meter', 'rtu')", f.target)
            if index and (not index.isdigit() or int(index) >= counts[group]):
                raise At(f"faults[{i}].target", f"index must be 0..{counts[group] - 1}", f.target)
        for i, a in enumerate(self.hil.actions):
            if a.at_s >= self.duration_s:
                raise At(f"hil.actions[{i}].at_s", f"after the run ends (duration_s {self.duration_s:g})", a.at_s)
        return self

    @model_validator(mode="after")
    def _regulation_fits(self):
        r = self.regulation
        if r is None:
            return self
        kinds = {g.name: g.kind for g in self.fleet}
        if kinds.get(r.group) != "tcl":
            raise At("regulation.group", "must name a fleet group of kind 'tcl'", r.group)
        if not next(g.count for g in self.fleet if g.name == r.group):
            raise At("regulation.group", "names a group with count 0; regulation needs devices", r.group)
        end = r.identify_s + r.holdout_s + r.duration_s
        if end > self.duration_s + 1e-9:
            raise At("duration_s", f"regulation windows (identify_s + holdout_s + duration_s) end at {end:g} s, "
                     f"after duration_s {self.duration_s:g}, the run's end", show=False)
        if r.step_s < self.device_step_s:
            raise At("regulation.step_s", f"must be >= device_step_s ({self.device_step_s:g})", r.step_s)
        return self
