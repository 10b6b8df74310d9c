"""SunSpec model layouts (from pysunspec2's model definitions) and register decoding.

`layout(model_id)` gives each top-level point's offset from the model's ID register, its type
and its scale-factor point; `decode` turns raw registers into a number or None when the
device marks the point not implemented (0x8000, 0xFFFF, ...). Repeating groups are ignored:
the controller needs only the fixed block of each model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

SUNS = (0x5375, 0x6E53)  # "SunS"
BASE_ADDRESSES = (40000, 0, 50000)
END_ID = 0xFFFF


@dataclass(frozen=True)
class Point:
    name: str
    offset: int  # registers from the model's ID register
    type: str
    size: int
    sf: str | int | None


def _models_dir() -> Path:
    import sunspec2

    return Path(sunspec2.__file__).parent / "models" / "json"


@lru_cache(maxsize=None)
def layout(model_id: int) -> dict[str, Point]:
    path = _models_dir() / f"model_{model_id}.json"
    if not path.exists():
        raise KeyError(f"SunSpec model {model_id}: no definition in pysunspec2")
    pts = json.loads(path.read_text())["group"]["points"]
    out, off = {}, 0
    for p in pts:
        size = int(p.get("size", 1))
        out[p["name"]] = Point(p["name"], off, p["type"], size, p.get("sf"))
        off += size
    return out


NOT_IMPL = {"int16": 0x8000, "sunssf": 0x8000, "uint16": 0xFFFF, "enum16": 0xFFFF,
            "bitfield16": 0xFFFF, "count": 0, "acc16": 0, "uint32": 0xFFFFFFFF,
            "int32": 0x80000000, "enum32": 0xFFFFFFFF, "bitfield32": 0xFFFFFFFF, "acc32": 0}


def raw_int(regs: list[int], p: Point) -> int:
    v = 0
    for r in regs[p.offset:p.offset + p.size]:
        v = (v << 16) | (r & 0xFFFF)
    return v


def decode(regs: list[int], p: Point) -> int | None:
    """Integer value of point p in a block read from the model start; None if not implemented."""
    if p.offset + p.size > len(regs):
        return None
    v = raw_int(regs, p)
    if v == NOT_IMPL.get(p.type, -1):
        return None
    if p.type in ("int16", "sunssf") and v >= 0x8000:
        v -= 0x10000
    elif p.type == "int32" and v >= 0x80000000:
        v -= 0x100000000
    return v


def encode(value: int, p: Point) -> list[int]:
    v = int(value)
    if v < 0:
        v += 1 << (16 * p.size)
    return [(v >> (16 * (p.size - 1 - i))) & 0xFFFF for i in range(p.size)]
