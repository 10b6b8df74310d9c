"""SunSpec model layouts and register encoding, both from pysunspec2 (its model objects and
its Modbus type codecs): the emulators (device_emulators/register_map.py) use the same two
pysunspec2 APIs, so controller and devices cannot disagree on offsets, sizes or the
"not implemented" values of any type.

`layout(model_id)` gives each top-level point's offset from the model's ID register, its type,
size and scale-factor point; `decode` turns raw registers into a number, or None when the device
marks the point not implemented; `encode` is its inverse. Repeating groups are ignored: the
controller needs only the fixed block of each model.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

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


@lru_cache(maxsize=None)
def layout(model_id: int) -> dict[str, Point]:
    from sunspec2.device import Model, ModelError

    try:
        m = Model(model_id=model_id)
    except (ModelError, Exception) as e:  # pysunspec2 raises plain Exception for unknown ids
        raise KeyError(f"SunSpec model {model_id}: no definition in pysunspec2 ({e})") from None
    return {name: Point(name, p.offset, p.pdef["type"], p.len, p.pdef.get("sf")) for name, p in m.points.items()}


def _info(p: Point):
    from sunspec2.mb import point_type_info

    return point_type_info[p.type]


def decode(regs: list[int], p: Point) -> int | None:
    """Value of point p in a block read from the model start; None if not implemented."""
    if p.offset + p.size > len(regs):
        return None
    info = _info(p)
    v = info.data_to(b"".join((r & 0xFFFF).to_bytes(2, "big") for r in regs[p.offset:p.offset + p.size]))
    return v if info.is_impl(v) else None


def encode(value: int, p: Point) -> list[int]:
    data = _info(p).to_data(int(value), 2 * p.size)
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, 2 * p.size, 2)]


def unimplemented(p: Point) -> list[int]:
    """The registers of point p marked "not implemented" (pysunspec2's value for its type)."""
    from sunspec2.mb import create_unimpl_value

    data = create_unimpl_value(p.type, 2 * p.size)
    return [int.from_bytes(data[i:i + 2], "big") for i in range(0, 2 * p.size, 2)]
