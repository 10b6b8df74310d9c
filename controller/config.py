"""Service configuration for `gridtwin controller serve --config X.yaml` (pydantic).

Devices are listed per group with their link and endpoint(s); tokens come from a file or the
GRIDTWIN_API_TOKENS environment variable, never from the config itself. Errors are one line
naming the file, the key path and what was expected.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ROLES = ("viewer", "operator", "admin")


class ConfigError(ValueError):
    """One-line, user-facing configuration problem."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeviceGroup(Strict):
    """A group of same-kind devices: one endpoint per device (`ports`, or `units` on one port)."""

    group: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["pv", "battery", "meter"]
    link: Literal["modbus"] = "modbus"
    host: str = "127.0.0.1"
    ports: list[int] = Field(min_length=1)
    units: list[int] | None = None  # per device; default 1 each
    poll_s: float = Field(1.0, gt=0)

    @model_validator(mode="after")
    def _shape(self):
        if self.units is not None and len(self.units) != len(self.ports):
            raise ValueError(f"units has {len(self.units)} entries, ports {len(self.ports)}")
        return self

    def rows(self) -> list[dict]:
        units = self.units or [1] * len(self.ports)
        return [{"device_id": f"{self.group}/{i}", "group": self.group, "kind": self.kind,
                 "host": self.host, "port": p, "unit": u, "poll_s": self.poll_s}
                for i, (p, u) in enumerate(zip(self.ports, units))]


class LinkSettings(Strict):
    timeout_s: float = Field(0.5, gt=0, le=30)
    max_failures: int = Field(2, ge=1)
    backoff_s: float = Field(1.0, gt=0)
    backoff_max_s: float = Field(30.0, gt=0)


class HistorianSettings(Strict):
    path: str = "state/historian.sqlite"
    synchronous: Literal["FULL", "NORMAL"] = "FULL"
    telemetry_every_s: float = Field(1.0, ge=0)


class ApiSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    tokens_file: str | None = Field(None, description="YAML/JSON {token: {user, role}}")


class PriceSettings(Strict):
    base_eur_per_mwh: float = 80.0
    periods: list[tuple[float, float, float]] = Field(default_factory=list,
                                                       description="[start_h, end_h, EUR/MWh] UTC")


class ServiceConfig(Strict):
    name: str = "vpp"
    cycle_s: float = Field(60.0, gt=0)
    optimize_every_s: float = Field(0.0, ge=0, description="0: no battery schedule")
    devices: list[DeviceGroup] = Field(min_length=1)
    link: LinkSettings = LinkSettings()
    historian: HistorianSettings = HistorianSettings()
    api: ApiSettings = ApiSettings()
    prices: PriceSettings = PriceSettings()
    _dir: Path = Path(".")

    @model_validator(mode="after")
    def _unique(self):
        names = [d.group for d in self.devices]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ValueError(f"device group names must be unique, repeated: {sorted(dup)}")
        return self

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
    try:
        cfg = ServiceConfig.model_validate(raw or {})
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(x) for x in err["loc"]) or "(top)"
        raise ConfigError(f"{p}: {loc}: {err['msg']} (got {err.get('input')!r:.60})") from None
    cfg._dir = p.resolve().parent
    return cfg


def load_tokens(cfg: ServiceConfig) -> dict[str, dict]:
    """{token: {"user", "role"}} from api.tokens_file and/or GRIDTWIN_API_TOKENS
    ("token:user:role,..."). No tokens at all means every request is refused."""
    out: dict[str, dict] = {}
    if cfg.api.tokens_file:
        f = cfg.resolve(cfg.api.tokens_file)
        try:
            data = yaml.safe_load(f.read_text()) if f.suffix != ".json" else json.loads(f.read_text())
        except FileNotFoundError:
            raise ConfigError(f"api.tokens_file: {f} not found") from None
        for tok, v in (data or {}).items():
            out[str(tok)] = {"user": str(v.get("user", "?")), "role": str(v.get("role"))}
    env = os.environ.get("GRIDTWIN_API_TOKENS", "")
    for item in filter(None, (x.strip() for x in env.split(","))):
        parts = item.split(":")
        if len(parts) != 3:
            raise ConfigError("GRIDTWIN_API_TOKENS: entries must be token:user:role")
        out[parts[0]] = {"user": parts[1], "role": parts[2]}
    for tok, v in out.items():
        if v["role"] not in ROLES:
            raise ConfigError(f"token for user {v['user']!r}: role {v['role']!r} not in {ROLES}")
    return out
