"""Service configuration for `gridtwin controller serve --config X.yaml` (pydantic).

Devices are listed per group with their link and endpoint(s); tokens come from a file or the
GRIDTWIN_API_TOKENS environment variable, never from the config itself. Errors are one line
naming the file, the key path and what was expected.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from controller.api_settings import ApiSettings  # the `api:` section (owned with the API)
from controller.kinds import CONTROLLABLE
from scenarios.model import DrEvent, Feeder, iana_zone

ROLES = ("viewer", "operator", "admin")


class ConfigError(ValueError):
    """One-line, user-facing configuration problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


PLAIN_KINDS = ("ev", "flex_load", "tcl")  # plain register maps (controller/links/regmaps.py)
SUNSPEC_KINDS = ("pv", "battery", "meter")
GATED_KINDS = CONTROLLABLE  # commanded: the gate needs their bus


class DeviceGroup(Strict):
    """A group of same-kind Modbus devices. Endpoints: `ports` (one device per port, `units`
    optional per device), or `port` with `units` (a gateway: one unit id per device), or
    `first_port` with `count` (consecutive ports, as `gridtwin emulate --port-base` assigns)."""

    group: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["pv", "battery", "meter", "ev", "flex_load", "tcl"]
    link: Literal["modbus"] = "modbus"
    host: str = "127.0.0.1"
    ports: list[int] | None = Field(None, min_length=1)
    port: int | None = Field(None, ge=1, le=65535)
    first_port: int | None = Field(None, ge=1, le=65535)
    count: int | None = Field(None, ge=1)
    units: list[int] | None = None  # per device; default 1 each
    map_file: str | None = Field(None, description="plain register map YAML (ev, flex_load, tcl)")
    buses: list[int] | None = Field(None, description="feeder-model bus index per device")
    bus: int | None = Field(None, ge=0, description="one bus for every device of the group")
    poll_s: float = Field(1.0, gt=0)
    departure_h: float | None = Field(None, ge=0, lt=24, description=(
        "ev: the cars' usual departure, hour of day UTC, for the schedule's energy-by-departure "
        "where a charger does not report its departure"))

    @model_validator(mode="after")
    def _shape(self):
        forms = [self.ports is not None, self.port is not None, self.first_port is not None]
        if sum(forms) != 1:
            raise ValueError("give exactly one of ports, port (+ units) or first_port (+ count)")
        if self.first_port is not None and self.count is None:
            raise ValueError("first_port needs count")
        if self.count is not None and self.first_port is None:
            raise ValueError("count goes with first_port")
        if self.port is not None and not self.units:
            raise ValueError("port (one gateway) needs units, one unit id per device")
        n = len(self.port_list())
        if self.units is not None and len(self.units) != n:
            raise ValueError(f"units has {len(self.units)} entries for {n} devices")
        if self.buses is not None and self.bus is not None:
            raise ValueError("give buses (one per device) or bus (all devices), not both")
        if self.buses is not None and len(self.buses) != n:
            raise ValueError(f"buses has {len(self.buses)} entries for {n} devices")
        if self.departure_h is not None and self.kind != "ev":
            raise ValueError(f"departure_h is for kind 'ev', not {self.kind!r}")
        if self.map_file is not None and self.kind not in PLAIN_KINDS:
            raise ValueError(f"map_file is for plain-map kinds {PLAIN_KINDS}, not {self.kind!r}")
        return self

    def port_list(self) -> list[int]:
        if self.ports is not None:
            return list(self.ports)
        if self.port is not None:
            return [self.port] * len(self.units or [])
        return list(range(self.first_port, self.first_port + (self.count or 0)))

    def rows(self, resolve=lambda p: p) -> list[dict]:
        ports = self.port_list()
        units = self.units or [1] * len(ports)
        buses = self.buses or [self.bus] * len(ports)
        extra = {"map_file": str(resolve(self.map_file))} if self.map_file else {}
        return [{"device_id": f"{self.group}/{i}", "group": self.group, "kind": self.kind,
                 "host": self.host, "port": p, "unit": u, "poll_s": self.poll_s, "bus": b, **extra}
                for i, (p, u, b) in enumerate(zip(ports, units, buses))]


class Iec104Tls(Strict):
    """IEC 104 over TLS (IEC 62351-3 profile, mutual authentication): the controller's
    certificate and key (mode 0600) and the CA the RTU's certificate must chain to."""

    cert_file: str
    key_file: str
    ca_file: str
    check_hostname: bool = Field(True, description="the RTU's certificate must name host (or server_name)")
    server_name: str | None = Field(None, description="name to check instead of host")


class Iec104Rtu(Strict):
    """A feeder RTU over IEC 60870-5-104 (one device, id = group, kind 'rtu')."""

    group: str = Field("rtu", pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: int = Field(2404, ge=1, le=65535)
    common_address: int = Field(1, ge=1, le=65534)
    sbo: bool = Field(True, description="select-before-operate for switch commands")
    sbo_setpoints: bool = Field(False, description="select-before-operate for tap and capacitor setpoints")
    termination: Literal["sbo", "always", "never"] = Field("sbo", description=(
        "wait for the activation termination after select-before-operate commands, every command, or never"))
    command_timeout_s: float = Field(5.0, gt=0, le=60, description="longest wait for each command reply")
    stale_s: float = Field(120.0, gt=0, description="no update within this (wall) time: stale")
    connect_timeout_s: float = Field(5.0, gt=0, le=60)
    tls: Iec104Tls | None = None

    def row(self, resolve=lambda p: p) -> dict:
        row = {"device_id": self.group, "group": self.group, "host": self.host, "port": self.port,
               "unit": self.common_address, "sbo": self.sbo}
        if self.sbo_setpoints:
            row["sbo_setpoints"] = True
        if self.termination != "sbo":
            row["termination"] = self.termination
        if self.tls is not None:
            t = self.tls
            row["tls"] = {"cert_file": str(resolve(t.cert_file)), "key_file": str(resolve(t.key_file)),
                          "ca_file": str(resolve(t.ca_file)), "check_hostname": t.check_hostname,
                          "server_name": t.server_name}
        return row


class ServiceFeeder(Feeder):
    """The controller's network model: scenarios.model.Feeder plus whether the safety gate
    checks commands on it (default: yes)."""

    safety_gate: bool = True


class ConfigDrEvent(DrEvent):
    """A DR event known when the service starts (scenarios.model.DrEvent: id, start UTC,
    duration_s, reduction_kw, groups)."""


class OpenAdrSettings(Strict):
    """The controller as an OpenADR 2.0b VEN. Keys and certificates come from files (paths
    here) or the environment, never from this file."""

    vtn_url: str = Field(pattern=r"^https?://")
    ven_name: str = "gridtwin-vpp"
    ven_id: str | None = None
    poll_s: float = Field(10.0, gt=0, le=3600, description="own poll period besides the VTN's")
    contracted_kw: float = Field(100.0, gt=0)
    start_timeout_s: float = Field(10.0, gt=0, le=120)
    retry_s: float = Field(5.0, gt=0, le=3600, description="registration retry period")
    down_after_s: float = Field(30.0, gt=0, description="no VTN answer this long: alarm")
    report_sampling_s: float = Field(10.0, gt=0)
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None
    passphrase_env: str | None = Field(None, description="env variable holding the key passphrase")
    vtn_fingerprint_env: str | None = Field(None, description="env variable with the VTN's fingerprint")


class LinkSettings(Strict):
    timeout_s: float = Field(0.5, gt=0, le=30)
    max_failures: int = Field(2, ge=1)
    backoff_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)


class HistorianSettings(Strict):
    path: str = "state/historian.sqlite"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    telemetry_every_s: float = Field(1.0, ge=0)


class PriceSettings(Strict):
    base_eur_per_mwh: float = 80.0
    periods: list[tuple[float, float, float]] = Field(default_factory=list,
                                                       description="[start_h, end_h, EUR/MWh] UTC")


class EmergencySettings(Strict):
    restore_spread_s: float = Field(600.0, ge=0, le=86400, description=(
        "staged restore after an emergency: flex loads at once, TCL cohorts over this time, "
        "EV caps and batteries at its end"))


class QualityChecks(Strict):
    """Data-quality thresholds for one device kind (controller/quality.py KindChecks; unset
    keys keep the kind's default; null turns a check off where the field allows it)."""

    rating_factor: float | None = Field(None, gt=0, description="|P| above this x rating is not physical")
    stuck_polls: int | None = Field(None, ge=1, description="fresh polls a counter may stand still while P moves")
    stuck_min_kwh: float | None = Field(None, ge=0, description="... while |P| says it moved at least this")
    stuck_min_s: float | None = Field(None, ge=0, description="... and for at least this long")
    max_rate_frac_per_s: float | None = Field(None, gt=0, description="|dP/dt| limit, share of rating per s")
    future_s: float | None = Field(None, ge=0, description="reading stamped later than now + this")

    @model_validator(mode="after")
    def _nulls(self):
        for k in ("stuck_polls", "stuck_min_kwh", "stuck_min_s", "future_s"):
            if k in self.model_fields_set and getattr(self, k) is None:
                raise ValueError(f"{k} cannot be null (only rating_factor and max_rate_frac_per_s can be off)")
        return self

    def overrides(self) -> dict:
        """Only the keys the file sets (an explicit null included: it turns the check off)."""
        return {k: getattr(self, k) for k in self.model_fields_set}


class ServiceConfig(Strict):
    name: str = "vpp"
    cycle_s: float = Field(60.0, gt=0)
    optimize_every_s: float = Field(0.0, ge=0, description="0: no schedule (batteries, EVs, PV, flex loads, TCLs)")
    export_limit_kw: float | None = Field(None, gt=0, description="most the feeder head may export (kW): the schedule plans within it and PV is capped in real time on the head meter beyond it")
    timezone: str = Field("UTC", max_length=64, description="IANA time zone of the site: the schedule's "
                          "load and PV profiles are learnt per quarter hour of its local clock (DST included)")
    objective: Literal["cost", "peak"] = Field(
        "cost", description="battery schedule: arbitrage at the prices, or feeder-head peak shaving")
    devices: list[DeviceGroup] = Field(default_factory=list)
    iec104: list[Iec104Rtu] = Field(default_factory=list)
    feeder: ServiceFeeder | None = None
    dr_events: list[ConfigDrEvent] = Field(default_factory=list)
    openadr: OpenAdrSettings | None = None
    link: LinkSettings = LinkSettings()
    historian: HistorianSettings = HistorianSettings()
    api: ApiSettings = ApiSettings()
    prices: PriceSettings = PriceSettings()
    emergency: EmergencySettings = EmergencySettings()
    reconcile: Literal["adopt", "release", "off"] = Field("adopt", description=(
        "at start, setpoints devices hold that differ from what the controller believes: alarm, "
        "and adopt them as an active emergency (the operator restores) or release them"))
    quality: dict[Literal["pv", "battery", "meter", "ev", "flex_load", "tcl", "rtu"], QualityChecks] = Field(
        default_factory=dict, description="data-quality thresholds per device kind")
    _dir: Path = Path(".")
    _path: str = "config"

    _iana = field_validator("timezone")(classmethod(lambda cls, v: iana_zone(v)))

    @model_validator(mode="after")
    def _unique(self):
        if not self.devices and not self.iec104:
            raise ValueError("no devices: give at least one group under devices or iec104")
        names = [d.group for d in self.devices] + [r.group for r in self.iec104]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"device group names must be unique, repeated: {sorted(dup)}")
        ids = [e.id for e in self.dr_events]
        dup = {n for n in ids if ids.count(n) > 1}
        if dup:
            raise ValueError(f"dr_events ids must be unique, repeated: {sorted(dup)}")
        return self

    @property
    def safety_gate(self) -> bool:
        return self.feeder is not None and self.feeder.safety_gate

    def resolve(self, p: str) -> Path:
        q = Path(p)
        return q if q.is_absolute() else self._dir / q

    def price_fn(self):
        import numpy as np

        def f(times):
            h = (np.asarray(times, float) / 3600.0) % 24.0
            out = np.full(h.shape, self.prices.base_eur_per_mwh)
            for a, b, v in self.prices.periods:
                out[(h >= a) & (h < b)] = v
            return out

        return f


def load_config(path: str | Path) -> ServiceConfig:
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{p}: file not found") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top, got {type(raw).__name__}")
    try:
        cfg = ServiceConfig.model_validate(raw or {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top)"
        msg = err["msg"].removeprefix("Value error, ")
        got = "" if err["type"] == "missing" else f" (got {err.get('input')!r:.60})"
        raise ConfigError(f"{p}: {loc}: {msg}{got}") from None
    cfg._dir = p.resolve().parent
    cfg._path = str(p)
    _check_references(cfg, p)
    return cfg


def _check_references(cfg: ServiceConfig, p: Path) -> None:
    """Checks across sections and against files: DR groups exist, referenced files exist."""
    groups = {d.group for d in cfg.devices}
    for i, ev in enumerate(cfg.dr_events):
        for g in ev.groups or []:
            if g not in groups:
                raise ConfigError(f"{p}: dr_events.{i}.groups: unknown device group {g!r} "
                                  f"(known: {sorted(groups)})")
    for i, d in enumerate(cfg.devices):
        if d.map_file and not cfg.resolve(d.map_file).is_file():
            raise ConfigError(f"{p}: devices.{i}.map_file: {cfg.resolve(d.map_file)} not found")
    if cfg.feeder is not None and cfg.feeder.path and not cfg.resolve(cfg.feeder.path).is_file():
        raise ConfigError(f"{p}: feeder.path: {cfg.resolve(cfg.feeder.path)} not found")
    if cfg.safety_gate:
        for i, d in enumerate(cfg.devices):
            if d.kind in GATED_KINDS and d.buses is None and d.bus is None:
                raise ConfigError(f"{p}: devices.{i}: group {d.group!r} needs buses (or bus): the "
                                  f"safety gate places its devices on the feeder model")
    oa = cfg.openadr
    if oa is not None:
        for key in ("cert_file", "key_file", "ca_file"):
            f = getattr(oa, key)
            if f and not cfg.resolve(f).is_file():
                raise ConfigError(f"{p}: openadr.{key}: {cfg.resolve(f)} not found")
        if bool(oa.cert_file) != bool(oa.key_file):
            raise ConfigError(f"{p}: openadr: cert_file and key_file go together")
    for i, rtu in enumerate(cfg.iec104):
        for key in ("cert_file", "key_file", "ca_file") if rtu.tls is not None else ():
            f = cfg.resolve(getattr(rtu.tls, key))
            if not f.is_file():
                raise ConfigError(f"{p}: iec104.{i}.tls.{key}: {f} not found")
        if rtu.tls is not None:
            from controller.security.keys import SecretError, read_secret_file

            try:
                read_secret_file(cfg.resolve(rtu.tls.key_file), private=True)
            except SecretError as e:
                raise ConfigError(f"{p}: iec104.{i}.tls.key_file: {e}") from None


def load_tokens(cfg: ServiceConfig):
    """controller.security.tokens.TokenStore from api.tokens_file (mode 0600) and/or
    GRIDTWIN_API_TOKENS ("token:user:role,..."). No tokens means every request is refused."""
    from controller.security.tokens import TokenError
    from controller.security.tokens import load_tokens as _load

    try:
        return _load(cfg.resolve(cfg.api.tokens_file) if cfg.api.tokens_file else None)
    except TokenError as e:
        raise ConfigError(str(e)) from None
