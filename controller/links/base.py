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

    def writable(self, device_id: str) -> frozenset[str] | None:
        """Setpoints this link can write to the device (ModbusLink: from the SunSpec models or
        register map the device has, known once it has been discovered); None: not known."""
        return None

    def capabilities(self) -> dict[str, frozenset[str]]:
        """{group: setpoints the link can write to every discovered device of the group};
        a group this link cannot tell about is left out."""
        out: dict[str, frozenset[str]] = {}
        for d in self.devices_known():
            w = self.writable(d.device_id)
            if w is not None:
                out[d.group] = out[d.group] & w if d.group in out else frozenset(w)
        return out

    def devices_known(self) -> list[DeviceInfo]:
        """The device list without contacting devices (default: `devices()`)."""
        return self.devices()

    def read_setpoints(self, device_ids=None) -> dict[str, dict[str, float]]:
        """{device_id: {setpoint: value}}: what the devices that answer hold now (all, or those
        named), read back from the device (controller/reconcile.py compares it with what the
        controller believes at start). Devices that do not answer, and links that cannot read
        back, are left out."""
        return {}

    def take_rediscovered(self) -> dict[str, dict[str, float]]:
        """{device_id: ratings} of devices (re)discovered since the last call: a device that
        came up after the controller, or answered again after a lost connection."""
        return {}

    def close(self) -> None:
        pass
