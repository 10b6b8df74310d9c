"""DeviceLink: how the controller reads telemetry from and writes setpoints to devices.

ModbusLink (SunSpec), Iec104Link and DirectLink (in-process) all implement this; the
controller code above them is identical for every link kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class Quality(str, Enum):
    GOOD = "good"
    STALE = "stale"  # value not refreshed within its poll schedule's allowance
    INVALID = "invalid"  # device flagged it (IEC 104 IV bit, SunSpec not-implemented, bad scale)
    MISSING = "missing"  # never read, or device unavailable
    SUSPECT = "suspect"  # read fine but fails a data-quality check (controller/quality.py)


@dataclass
class Value:
    value: float
    quality: Quality
    t: float  # controller clock time of the reading (s since epoch)


@dataclass
class DeviceInfo:
    """Static description of a device the controller manages."""

    device_id: str  # "<group>/<index>"
    group: str
    kind: str  # pv | battery | ev | tcl | flex_load | meter | rtu
    bus: int | None = None
    ratings: dict[str, float] = field(default_factory=dict)  # e.g. p_max_kw, e_cap_kwh, s_rated_kva


@dataclass
class DeviceStatus:
    available: bool = True
    reason: str = ""  # why not available: timeout, exception 4, disconnected, out_of_service
    last_ok_t: float | None = None
    consecutive_failures: int = 0


class DeviceLink:
    """Read telemetry / write setpoints for a set of devices."""

    def devices(self) -> list[DeviceInfo]:
        raise NotImplementedError

    def read(self) -> dict[str, dict[str, Value]]:
        """Latest telemetry per device id, each quantity with a quality flag."""
        raise NotImplementedError

    def write(self, device_id: str, setpoint: str, value: float) -> bool:
        """Send one setpoint; True when the device confirmed it (read-back or ack)."""
        raise NotImplementedError

    def status(self) -> dict[str, DeviceStatus]:
        raise NotImplementedError

    def take_rediscovered(self) -> dict[str, dict[str, float]]:
        """{device_id: ratings} of devices (re)discovered since the last call: a device that
        came up after the controller, or answered again after a lost connection."""
        return {}

    def close(self) -> None:
        pass
