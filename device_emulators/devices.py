"""One emulated device: a register image bound to a row of a twin fleet (or to the feeder
head), the control laws SunSpec defines for writes, and the device's injected faults."""

from __future__ import annotations

import numpy as np

from device_emulators.register_map import DeviceImage, MapError, load_map
from twin.fleet.base import SetpointError


class WriteRefused(Exception):
    """A write the device answers with a Modbus exception (code in .code)."""

    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


def _pv_immediate(dev) -> dict[str, float]:
    """SunSpec 123: WMaxLimPct limits output only while WMaxLim_Ena is 1."""
    img = dev.image
    ena = img.raw(img.by_name["123.WMaxLim_Ena"])
    pct = img.engineering(img.by_name["123.WMaxLimPct"]) if ena == 1 else 100.0
    return {"p_limit_pct": pct}


def _storage_124(dev) -> dict[str, float]:
    """SunSpec 124: StorCtl_Mod bit 0 charges at InWRte, bit 1 discharges at OutWRte (% WChaMax)."""
    img = dev.image
    mode = img.raw(img.by_name["124.StorCtl_Mod"])
    p_max = float(dev.fleet.p_max_kw[dev.index])
    if mode & 1 and not mode & 2:
        return {"p_set_kw": p_max * img.engineering(img.by_name["124.InWRte"]) / 100.0}
    if mode & 2 and not mode & 1:
        return {"p_set_kw": -p_max * img.engineering(img.by_name["124.OutWRte"]) / 100.0}
    if mode == 0:
        return {"p_set_kw": 0.0}
    raise WriteRefused(3, f"StorCtl_Mod={mode}: charge and discharge at once")


CONTROL_LAWS = {"pv_immediate": _pv_immediate, "storage_124": _storage_124}


class EmulatedDevice:
    """Registers of one device; `refresh()` before a read, `apply_write()` for a write."""

    def __init__(self, device_id: str, kind: str, map_name: str, unit: int, twin, fleet=None,
                 index: int | None = None):
        self.device_id, self.kind, self.unit = device_id, kind, unit
        self.map_name = map_name
        self.image = DeviceImage(load_map(map_name), device_id, unit)
        if self.image.kind != kind:
            raise MapError(f"map {map_name} is for {self.image.kind!r} devices, not {kind!r}")
        self.twin, self.fleet, self.index = twin, fleet, index
        self.law = CONTROL_LAWS.get(self.image.map.get("controls"))
        # injected faults (see device_emulators.faults)
        self.latency_s = 0.0
        self.drop = False
        self.exception_code = 0
        self.frozen = False
        self.sf_error = 0
        self.image.resolve_auto_scale(self.sources())
        self.refresh()

    # --- twin -> registers ------------------------------------------------------------------
    def sources(self) -> dict[str, float]:
        tw = self.twin
        if self.kind == "meter":
            r = tw.grid.result
            head = int(tw.net.ext_grid.bus.iloc[0])
            v = float(tw.grid.v_meas_pu[tw.pf.bus_position(head)]) if r is not None and r.converged else np.nan
            return {"p_kw": r.p_head_kw if r is not None else np.nan,
                    "q_kvar": r.q_head_kvar if r is not None else np.nan, "v_pu": v}
        f, i = self.fleet, self.index
        out = {k: float(np.asarray(a)[i]) for k, a in f.telemetry().items()}
        for attr in ("s_rated_kva", "p_max_kw", "e_cap_kwh"):
            if hasattr(f, attr):
                out[attr] = float(getattr(f, attr)[i])
        if self.kind == "battery":
            out["soc_min_pct"] = 100.0 * f.soc_min_kwh[i] / f.e_cap_kwh[i]
            out["e_avail_kwh"] = f.soc_kwh[i] - f.soc_min_kwh[i]
            out["cha_state"] = 4.0 if f.p_kw[i] > 0 else (3.0 if f.p_kw[i] < 0 else 2.0)
        if "connected" in out:
            out["connected"] = float(out["connected"])
        if "on" in out:
            out["on"] = float(out["on"])
        out["state"] = 4.0 if f.available[i] else 1.0  # SunSpec St: 4 MPPT/on, 1 off
        if tw.grid.result is not None and tw.grid.v_meas_pu.size:
            out["v_pu"] = float(tw.grid.v_meas_pu[tw.pf.bus_position(int(f.bus[i]))])
        return out

    def refresh(self) -> None:
        if not self.frozen:
            self.image.publish(self.sources(), self.sf_error)

    # --- registers -> twin --------------------------------------------------------------------
    def apply_write(self, address: int, values: list[int]) -> None:
        """Validate and apply a client's register write; raise WriteRefused(2|3) to refuse."""
        img = self.image
        lo, hi = img.address_range()
        if address < lo or address + len(values) > hi:
            raise WriteRefused(2, f"write outside {lo}..{hi - 1}")
        touched = img.covering(address, len(values))
        if not touched or any(not (b.writable or b.write) for b in touched):
            raise WriteRefused(2, "register is read-only")
        before = list(img.regs)
        img.regs[address - lo:address - lo + len(values)] = [int(v) & 0xFFFF for v in values]
        try:
            setpoints = {b.write: img.engineering(b) for b in touched if b.write}
            if self.law is not None:
                setpoints.update(self.law(self))
            for name, value in setpoints.items():
                self.fleet.write(name, self.index, value)
        except SetpointError as e:
            img.regs[:] = before
            raise WriteRefused(3, str(e)) from None
        except WriteRefused:
            img.regs[:] = before
            raise
