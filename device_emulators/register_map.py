"""Register maps are data: a YAML file (device_emulators/maps/) says which twin quantity each
register shows and which setpoint a write goes to; `DeviceImage` turns one map plus one twin
device into a live register image.

SunSpec maps list models by id; the layout of each model's fixed block (offsets, types,
sizes) comes from pysunspec2's model definitions, so a third-party SunSpec client decodes
exactly what we serve. 'SunS' sits at 40000, models chain by their length field, and the
end model 0xFFFF closes the chain. Points not named in the map read as SunSpec's
"not implemented" value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import yaml

MAPS_DIR = Path(__file__).parent / "maps"  # SunSpec maps: which twin quantity each point shows
# plain (non-SunSpec) device maps are shared data: the controller's links read the same files
DEVICE_MAPS_DIR = Path(__file__).resolve().parent.parent / "scenarios" / "device_maps"
SUNSPEC_BASE = 40000
SUNS = [0x5375, 0x6E53]
END_MODEL = [0xFFFF, 0]


class MapError(ValueError):
    """A register map file is inconsistent; message names the file and point."""


@dataclass(frozen=True)
class PointDef:
    name: str
    offset: int  # registers from the model's ID register (SunSpec) or absolute address
    type: str
    size: int
    access: str = "R"  # SunSpec: "RW" points a client may write
    symbols: tuple[int, ...] = ()  # enum values the model defines
    units: str = ""


def _pointdef(p, name: str) -> PointDef:
    d = p.pdef
    return PointDef(name, p.offset, d["type"], p.len, d.get("access", "R"),
                    tuple(int(s["value"]) for s in d.get("symbols", [])), str(d.get("units", "")))


@cache
def sunspec_layout(model_id: int) -> tuple[PointDef, ...]:
    """Fixed-block points of a SunSpec model, laid out by pysunspec2's own model object (the
    controller's links use the same), fixed sub-groups (e.g. 704 PFWInj) included."""
    from sunspec2.device import Model

    try:
        m = Model(model_id=model_id)
    except Exception as e:  # noqa: BLE001 - pysunspec2 raises plain Exception for unknown ids
        raise MapError(f"SunSpec model {model_id} is not defined in pysunspec2 ({e})") from None
    out = [_pointdef(p, name) for name, p in m.points.items()]
    for gname, g in m.groups.items():
        if isinstance(g, list):
            continue  # repeating groups: served with zero repeats
        out += [_pointdef(p, f"{gname}.{name}") for name, p in g.points.items()]
    return tuple(sorted(out, key=lambda p: p.offset))


def _regs(data: bytes) -> list[int]:
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, len(data), 2)]


def unimplemented(p: PointDef) -> list[int]:
    """Registers of p marked "not implemented" (pysunspec2's value for its type; plain: 0)."""
    from sunspec2.mb import create_unimpl_value

    try:
        return _regs(create_unimpl_value(p.type, 2 * p.size))
    except ValueError:
        return [0] * p.size


def encode(value: float | str, p: PointDef) -> list[int]:
    """Registers for one point, by pysunspec2's codec for its type (strings NUL padded)."""
    from sunspec2.mb import point_type_info

    info = point_type_info.get(p.type)
    if info is None:
        raise MapError(f"point {p.name}: unknown SunSpec type {p.type!r}")
    if p.type == "string":
        return _regs(str(value).encode()[: 2 * p.size].ljust(2 * p.size, b"\0"))
    return _regs(info.to_data(int(value), 2 * p.size))


def decode(regs: list[int], p: PointDef) -> int:
    from sunspec2.mb import point_type_info

    return point_type_info[p.type].data_to(b"".join((r & 0xFFFF).to_bytes(2, "big") for r in regs))


@cache
def load_map(name_or_path: str) -> dict:
    path = Path(name_or_path)
    if not path.suffix:
        path = MAPS_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            path = DEVICE_MAPS_DIR / f"{name_or_path}.yaml"
    try:
        m = yaml.safe_load(path.read_text())
    except OSError as e:
        raise MapError(f"register map {path}: {e.strerror}") from None
    for key in ("name", "kind", "sunspec"):
        if key not in m:
            raise MapError(f"register map {path}: missing key {key!r}")
    return m


MAP_FOR_KIND = {"pv": "pv_inverter", "battery": "battery", "meter": "meter", "ev": "ev_charger",
                "tcl": "tcl_gateway", "flex_load": "flex_load"}


@dataclass
class Binding:
    """One register range bound to a source and/or a setpoint."""

    point: PointDef
    address: int  # absolute register address
    value: object = None  # constant
    read: str | None = None  # source name
    factor: float = 1.0
    sf_point: str | None = None  # name of the scale-factor point (SunSpec)
    scale: float = 1.0  # custom maps: engineering value = raw * scale
    write: str | None = None  # setpoint name
    writable: bool = False  # stored locally (e.g. enable flags), read by a control law
    auto: str | float | None = None  # scale factor chosen so this rating (source or number) fits
    fit: float = 32000.0  # ... within this raw value (int16 points; 4e9 for acc32 counters)


class DeviceImage:
    """The register image of one device, laid out from its map."""

    def __init__(self, map_def: dict, device_id: str, unit: int, identity: dict | None = None):
        self.identity = identity or {}
        self.map = map_def
        self.kind = map_def["kind"]
        self.bindings: list[Binding] = []
        self._cover: dict[tuple[int, int], list[Binding]] = {}
        self.by_name: dict[str, Binding] = {}
        if map_def["sunspec"]:
            self.base = SUNSPEC_BASE
            regs = list(SUNS)
            for model in map_def["models"]:
                mid = int(model["id"])
                layout = sunspec_layout(mid)
                start = SUNSPEC_BASE + len(regs)
                length = sum(p.size for p in layout)
                block = [0] * length
                for p in layout:
                    block[p.offset:p.offset + p.size] = unimplemented(p)
                block[0], block[1] = mid, length - 2
                spec = model.get("points", {}) or {}
                known = {p.name: p for p in layout}
                for name, s in spec.items():
                    if name not in known:
                        raise MapError(f"map {map_def['name']}: model {mid} has no point {name!r}")
                    b = self._binding(known[name], start + known[name].offset, s, device_id, unit, mid)
                    self.by_name[f"{mid}.{name}"] = b
                    self.by_name.setdefault(name, b)
                for p in layout:  # writable in SunSpec but not used by a control law: stored
                    if p.access == "RW" and p.name not in spec:
                        b = Binding(p, start + p.offset, writable=True)
                        self.bindings.append(b)
                        self.by_name[f"{mid}.{p.name}"] = b
                regs += block
            regs += END_MODEL
            self.regs = regs
        else:
            rows = map_def["registers"]
            self.base = min(r["address"] for r in rows)
            end = max(r["address"] + (2 if r["type"].endswith("32") else 1) for r in rows)
            self.regs = [0] * (end - self.base)
            for r in rows:
                p = PointDef(r["name"], r["address"], r["type"], 2 if r["type"].endswith("32") else 1)
                b = Binding(p, r["address"], read=r.get("read"), scale=float(r.get("scale", 1.0)),
                            write=r.get("write"))
                self.bindings.append(b)
                self.by_name[p.name] = b
        self.writable_regs = {a for b in self.bindings if b.writable or b.write
                              for a in range(b.address, b.address + b.point.size)}
        for b in self.bindings:
            if b.sf_point and b.sf_point not in self.by_name:
                raise MapError(f"map {map_def['name']}: point {b.point.name} scale factor "
                               f"{b.sf_point} is not listed in the map")
            if b.value is not None:
                self._put(b, b.value)

    def _binding(self, p, address, s, device_id, unit, mid) -> Binding:
        value = s.get("value")
        if isinstance(value, str):
            value = value.format(device_id=device_id, unit=unit, **self.identity)
        b = Binding(p, address, value=value, read=s.get("read"), factor=float(s.get("factor", 1.0)),
                    sf_point=f"{mid}.{s['sf']}" if s.get("sf") else None, write=s.get("write"),
                    writable=bool(s.get("writable")),
                    auto=s.get("auto"), fit=float(s.get("fit", 32000.0)))
        if b.write or b.writable or p.access == "RW":
            b.writable = True
        self.bindings.append(b)
        return b

    # --- register access -----------------------------------------------------------------
    def _put(self, b: Binding, value) -> None:
        i = b.address - self.base
        self.regs[i:i + b.point.size] = encode(value, b.point)

    def raw(self, b: Binding) -> int:
        i = b.address - self.base
        return decode(self.regs[i:i + b.point.size], b.point)

    def sf(self, b: Binding) -> int:
        return self.raw(self.by_name[b.sf_point]) if b.sf_point else 0

    def engineering(self, b: Binding) -> float:
        """The value a register holds, in the twin's units (scale factors applied)."""
        if self.map["sunspec"]:
            return self.raw(b) * 10.0 ** self.sf(b) / b.factor
        return self.raw(b) * b.scale

    def write_error(self, touched: list[Binding], before: list[int]) -> str | None:
        """Why a write that left these bindings' registers as they now are breaks the model
        definition (enum value not defined, percentage beyond 100, power factor outside
        (0, 1]), or None. Checked before any control law sees the values."""
        if not self.map["sunspec"]:
            return None
        for b in touched:
            p, raw = b.point, self.raw(b)
            i = b.address - self.base
            if self.regs[i:i + p.size] == unimplemented(p) and before[i:i + p.size] == self.regs[i:i + p.size]:
                continue  # an unimplemented value written back unchanged (block writes)
            if p.symbols and p.type.startswith("enum") and raw not in p.symbols:
                return f"{p.name}={raw} is not one of {sorted(p.symbols)}"
            units = p.units.lower()
            if p.type.startswith(("enum", "bitfield", "sunssf", "string")):
                continue
            x = raw * 10.0 ** self.sf(b)
            if "pct" in units or "%" in units:
                lo = 0.0 if p.type.startswith("uint") else -100.0
                if not lo <= x <= 100.0:
                    return f"{p.name}={x:g} outside {lo:g}..100 %"
            elif "cos" in units and not 0.0 < abs(x) <= 1.0:
                return f"{p.name}={x:g}: power factor outside (0, 1]"
        return None

    def resolve_auto_scale(self, sources: dict[str, float]) -> None:
        """Scale factors marked `auto`: the finest power of ten (10^-3 at best) at which the
        rating still fits its register (`fit`: an int16 by default)."""
        for b in self.bindings:
            if b.auto is None:
                continue
            rating = abs((float(sources[b.auto]) if isinstance(b.auto, str) else float(b.auto)) * b.factor)
            sf = math.ceil(math.log10(rating / b.fit)) if rating > 0 and math.isfinite(rating) else 0
            self._put(b, min(max(sf, -3), 10))

    def publish(self, sources: dict[str, float], sf_error: int = 0, only=None) -> None:
        """Refresh read-bound registers (all, or the bindings in `only`) from `sources`."""
        for b in self.bindings if only is None else only:
            if b.read is None or b.read not in sources:
                continue
            x = float(sources[b.read])
            if not math.isfinite(x):
                i = b.address - self.base
                self.regs[i:i + b.point.size] = unimplemented(b.point)
                continue
            if self.map["sunspec"]:
                raw = round(x * b.factor / 10.0 ** (self.sf(b) - (sf_error if b.sf_point else 0)))
            else:
                raw = round(x / b.scale)
            lo, hi = _range(b.point)
            self._put(b, min(max(raw, lo), hi))

    def covering(self, address: int, count: int) -> list[Binding]:
        key = (address, count)
        hit = self._cover.get(key)
        if hit is None:
            hit = [b for b in self.bindings
                   if b.address < address + count and address < b.address + b.point.size]
            if len(self._cover) < 256:  # pollers repeat a few ranges; bound the cache anyway
                self._cover[key] = hit
        return hit

    def address_range(self) -> tuple[int, int]:
        return self.base, self.base + len(self.regs)


def _range(p: PointDef) -> tuple[int, int]:
    bits = 16 * p.size
    if p.type in ("int16", "int32", "int64", "sunssf"):
        return -(1 << (bits - 1)) + 1, (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 2
