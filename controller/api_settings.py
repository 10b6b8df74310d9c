"""The `api:` section of the service config: where the API listens and how it protects itself
(TLS, request size, bounds on DR requests, audit of refused requests). Kept apart from
controller/config.py so the API's policy lives with the API's owner; config.py embeds it."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ApiSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    tokens_file: str | None = Field(None, description="YAML/JSON {token: {user, role}}, mode 0600")
    tls_cert_file: str | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_key_file: str | None = Field(None, description="PEM private key (mode 0600)")
    allow_plaintext_remote: bool = Field(
        False, description="serve plain HTTP on a non-loopback host (behind a TLS proxy only)")
    max_body_bytes: int = Field(65536, ge=256, le=16 * 2**20, description="larger requests get 413")
    history_page_rows: int = Field(5000, ge=10, le=100_000, description="most rows one history page returns")
    dr_start_window_s: float = Field(7 * 86400.0, gt=0,
                                     description="a DR event must start within this of now (either side)")
    dr_max_duration_s: float = Field(7 * 86400.0, gt=0, le=7 * 86400.0)
    dr_max_reduction_factor: float = Field(
        2.0, gt=0, description="reduction_kw at most this multiple of the fleet's rated flexible power")
    dr_beyond_margin: Literal["reject", "warn"] = Field(
        "warn", description="DR request above the margin now: 409, or accept with an alarm and a warning")
    dr_under_delivery_pct: float = Field(80.0, gt=0, le=100,
                                         description="alarm when an event delivers below this share ...")
    dr_under_delivery_s: float = Field(300.0, gt=0, description="... averaged over this long")
    denied_audit_per_min: int = Field(60, ge=1, description="401/403 audit rows kept per minute; the rest counted")
    shed_cycle_now: bool = Field(
        True, description="after POST /api/emergency/shed run a cycle at once (setpoints reach the devices "
                          "without waiting for the next period)")

    def is_loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False
