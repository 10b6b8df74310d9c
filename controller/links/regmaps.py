"""Plain (non-SunSpec) Modbus register maps the controller speaks: EV chargers, thermostat /
TCL gateways, flexible process loads. Holding registers, one quantity each, int16/uint16
with a fixed scale; `write` names the setpoint a register takes. The built-in maps are the
YAML files in scenarios/device_maps/, the same files the emulators serve (read as data, no
import across the controller/emulator line); an endpoint row may point at another YAML file of
the same form with `map_file`. `rating` marks registers read once as device ratings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

TYPES = {"int16": (-32768, 32767), "uint16": (0, 65535)}


@dataclass(frozen=True)
class Register:
    address: int
    name: str  # quantity name in the controller (load convention, units in the name)
    type: str
    scale: float
    write: str | None = None  # setpoint written through this register
    rating: bool = False


@dataclass(frozen=True)
class RegisterMap:
    name: str
    kind: str
    registers: tuple[Register, ...]

    @property
    def span(self) -> tuple[int, int]:
        lo = min(r.address for r in self.registers)
        return lo, max(r.address for r in self.registers) - lo + 1

    def for_setpoint(self, setpoint: str) -> Register | None:
        return next((r for r in self.registers if r.write == setpoint), None)

    def decode(self, regs: list[int], r: Register) -> float:
        raw = regs[r.address - self.span[0]]
        if r.type == "int16" and raw >= 0x8000:
            raw -= 0x10000
        return raw * r.scale

    def encode(self, r: Register, value: float) -> int:
        raw = int(round(value / r.scale))
        lo, hi = TYPES[r.type]
        if not lo <= raw <= hi:
            raise ValueError(f"map {self.name}: {r.name}={value:g} does not fit {r.type} at scale {r.scale:g}")
        return raw & 0xFFFF


class RegisterMapError(ValueError):
    """A register map file is unusable; one line naming file and entry."""


def load_map_file(path: str | Path) -> RegisterMap:
    """A map in the device_emulators/maps/ YAML form (name, kind, registers: address, name,
    type, scale, read, write); `rating: true` or a read name starting with p_max marks ratings."""
    p = Path(path)
    try:
        d = yaml.safe_load(p.read_text())
        regs = []
        for i, e in enumerate(d["registers"]):
            if e.get("type") not in TYPES:
                raise RegisterMapError(f"{p}: registers[{i}].type={e.get('type')!r}: expected int16 or uint16")
            name = e.get("read") or e["name"]
            regs.append(Register(int(e["address"]), str(name), e["type"], float(e.get("scale", 1)),
                                 e.get("write"), bool(e.get("rating", name == "p_max_kw"))))
        return RegisterMap(str(d.get("name", p.stem)), str(d["kind"]), tuple(regs))
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        if isinstance(e, RegisterMapError):
            raise
        raise RegisterMapError(f"{p}: not a register map ({type(e).__name__}: {e})") from None


DEVICE_MAPS_DIR = Path(__file__).resolve().parents[2] / "scenarios" / "device_maps"
BUILTIN = {m.name: m for m in (load_map_file(p) for p in sorted(DEVICE_MAPS_DIR.glob("*.yaml")))}
MAP_FOR_KIND = {m.kind: m.name for m in BUILTIN.values()}


def resolve(row: dict) -> RegisterMap | None:
    """The plain map an endpoint row uses, or None for SunSpec devices."""
    if row.get("map_file"):
        return load_map_file(row["map_file"])
    name = row.get("map") or MAP_FOR_KIND.get(row.get("kind"))
    return BUILTIN.get(name)
