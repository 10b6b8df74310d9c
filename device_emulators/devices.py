"""One emulated device: a register image bound to a row of a twin fleet (or to the feeder
head), the control laws SunSpec defines for writes, and the device's injected faults."""

from __future__ import annotations

import math
import zlib

import numpy as np

from device_emulators.register_map import DeviceImage, MapError, load_map
from scenarios.model import Emulation
from twin.fleet.base import SetpointError

# setpoints whose change follows the device's open-loop response time (IEEE 1547-2018 style):
# active power (curtailment limit, storage power) and reactive power; the other kinds' setpoints
# (EV charge limit, thermostat offsets, load curtailment) act at once, their own dynamics are
# the twin's physics
RESPONSE = {"p_limit_pct": "p_response_s", "p_set_kw": "p_response_s", "q_set_kvar": "q_response_s"}


def cha_state(p_kw: float, soc_kwh: float, soc_min_kwh: float, e_cap_kwh: float) -> float:
    """SunSpec 124 ChaSt: CHARGING 4 / DISCHARGING 3 while exchanging power; idle: EMPTY 2 at
    the reserve, FULL 5 at capacity, HOLDING 6 in between."""
    if p_kw > 1e-6:
        return 4.0
    if p_kw < -1e-6:
        return 3.0
    if soc_kwh <= soc_min_kwh + 1e-3 * e_cap_kwh:
        return 2.0
    return 5.0 if soc_kwh >= e_cap_kwh * (1 - 1e-3) else 6.0


# Default identity per device kind: one fictitious product line (scenario fleet[].emulation
# overrides manufacturer, model, serial pattern and firmware).
PRODUCT_LINE = {"pv": ("SVT", "SVT-3P-25K"), "battery": ("SVB", "SVB-HV-10"), "meter": ("SVM", "SVM-3P-CT"),
                "ev": ("SVC", "SVC-22"), "tcl": ("SVA", "SVA-GW1"), "flex_load": ("SVL", "SVL-PLC")}
VENDOR, FIRMWARE = "Solvanta", "4.12.3"


def identity(kind: str, device_id: str, seed: int, emulation=None) -> dict[str, str]:
    """Model 1 / device identification strings: a seeded 8-digit serial per device."""
    prefix, model = PRODUCT_LINE.get(kind, ("SV", kind))
    serial = zlib.crc32(f"{seed}:{device_id}".encode()) % 100_000_000
    pattern = getattr(emulation, "serial_pattern", None) or "{prefix}{serial:08d}"
    index = int(device_id.rpartition("/")[2]) if device_id.rpartition("/")[2].isdigit() else 0
    return {"manufacturer": getattr(emulation, "manufacturer", None) or VENDOR,
            "model": getattr(emulation, "model", None) or model,
            "firmware": getattr(emulation, "firmware", None) or FIRMWARE,
            "serial": pattern.format(prefix=prefix, serial=serial, index=index)}


class BusVoltage:
    """The twin's bus voltages as a device measures them between power flows: linear from the
    previous power flow's value to the latest one over one interval (a first-order hold), so a
    device's voltage moves every device step instead of jumping at power-flow instants."""

    def __init__(self):
        self.t_prev = self.t_cur = -1.0
        self.prev = self.cur = np.zeros(0)

    def record(self, t_s: float, v_pu: np.ndarray) -> None:
        """A power flow ran at t_s (called from the host's after-step hook)."""
        if t_s == self.t_cur:
            return
        self.t_prev, self.prev = self.t_cur, self.cur
        self.t_cur, self.cur = t_s, np.array(v_pu, dtype=float)

    def at(self, pos: int, t_s: float) -> float:
        if not self.cur.size:
            return np.nan
        v1 = float(self.cur[pos])
        if self.t_prev < 0 or not np.isfinite(self.prev[pos]) or not np.isfinite(v1):
            return v1
        w = min(max((t_s - self.t_cur) / (self.t_cur - self.t_prev), 0.0), 1.0)
        return float(self.prev[pos]) + w * (v1 - float(self.prev[pos]))


def grid_hz(t_s: float, seed: int) -> float:
    """A grid frequency that wanders like a real one (tens of mHz, minutes), deterministic per run."""
    ph = (seed % 997) / 997.0 * 2 * math.pi
    return 50.0 + 0.018 * math.sin(2 * math.pi * t_s / 311.0 + ph) + 0.007 * math.sin(2 * math.pi * t_s / 47.0 + 2 * ph)


class WriteRefused(Exception):
    """A write the device answers with a Modbus exception (code in .code)."""

    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code = code


def _has(img, name: str) -> bool:
    return name in img.by_name


def _on(img, name: str) -> bool:
    return _has(img, name) and img.raw(img.by_name[name]) == 1


def _eng(img, name: str) -> float:
    return img.engineering(img.by_name[name])


def pf_to_q_gen_kvar(p_gen_kw: float, pf: float) -> float:
    """Reactive power (generator convention) at power factor pf for active power p_gen_kw.

    pf > 0 over-excited (injects VAr), pf < 0 under-excited (absorbs VAr): the sign follows
    the SunSpec 704 PFWInj.Ext choice, used here for 123 OutPFSet too."""
    return abs(p_gen_kw) * math.tan(math.acos(min(abs(pf), 1.0))) * math.copysign(1.0, pf)


def _pf_setting(img) -> float | None:
    """The power factor a PV's enabled PF mode asks for (123 OutPFSet or 704 PFWInj), or None."""
    if _on(img, "123.OutPFSet_Ena"):
        pf = _eng(img, "123.OutPFSet")
    elif _on(img, "704.PFWInjEna"):
        pf = _eng(img, "704.PFWInj.PF")
        if img.raw(img.by_name["704.PFWInj.Ext"]) == 1:  # UNDER_EXCITED
            pf = -pf
    else:
        return None
    if not 0.0 < abs(pf) <= 1.0:
        raise WriteRefused(3, f"power factor {pf:g} outside (0, 1]")
    return pf


def _pv_controls(dev) -> dict[str, float]:
    """SunSpec 123/704 on a PV inverter.

    Active power: WMaxLimPct limits output only while its enable is 1 (123 WMaxLim_Ena, 704
    WMaxLimPctEna); with both enabled the lower limit holds. Reactive power, first enabled
    wins: constant power factor (123 OutPFSet_Ena, 704 PFWInjEna; re-applied after every
    twin step as P moves), then fixed VAr (123 VArPct_Ena with VArPct_Mod 1 = % of WMax,
    2 = % of VArMax; 704 VarSetEna with VarSetMod 0 = % of WMax, 1 = % of VarMax, 4 = VAr).
    """
    img, f, i = dev.image, dev.fleet, dev.index
    limits = [100.0]
    if _has(img, "123.Conn") and img.raw(img.by_name["123.Conn"]) == 0:  # DISCONNECT
        limits.append(0.0)
    if _on(img, "123.WMaxLim_Ena"):
        limits.append(_eng(img, "123.WMaxLimPct"))
    if _on(img, "704.WMaxLimPctEna"):
        limits.append(_eng(img, "704.WMaxLimPct"))
    out = {"p_limit_pct": min(limits)}
    s_kva, q_max = float(f.s_rated_kva[i]), float(f.q_max_kvar[i])
    pf = _pf_setting(img)
    q_gen = None
    if pf is not None:  # within the inverter's reactive capability (load-convention limits)
        q_gen = -min(max(-pf_to_q_gen_kvar(-float(f.p_kw[i]), pf), float(f.q_min_kvar[i])), q_max)
    elif _on(img, "123.VArPct_Ena"):
        mode = img.raw(img.by_name["123.VArPct_Mod"])
        if mode == 1:
            q_gen = _eng(img, "123.VArWMaxPct") / 100.0 * s_kva
        elif mode == 2:
            q_gen = _eng(img, "123.VArMaxPct") / 100.0 * q_max
        else:
            raise WriteRefused(3, f"VArPct_Mod={mode} not supported (1 WMax, 2 VArMax)")
    elif _on(img, "704.VarSetEna"):
        mode = img.raw(img.by_name["704.VarSetMod"])
        if mode == 0:
            q_gen = _eng(img, "704.VarSetPct") / 100.0 * s_kva
        elif mode == 1:
            q_gen = _eng(img, "704.VarSetPct") / 100.0 * q_max
        elif mode == 4:
            q_gen = _eng(img, "704.VarSet") / 1000.0
        else:
            raise WriteRefused(3, f"VarSetMod={mode} not supported (0, 1, 4)")
    dev.pf_target = pf
    (dev.pf_devices.add if pf is not None else dev.pf_devices.discard)(dev)
    if q_gen is not None or dev.q_active:
        out["q_set_kvar"] = -(q_gen or 0.0)  # twin: load convention
    dev.q_active = q_gen is not None
    return out


def _storage_124(dev) -> dict[str, float]:
    """SunSpec 124: StorCtl_Mod bit 0 charges at InWRte, bit 1 discharges at OutWRte (% WChaMax).
    A 704 WSet (WSetEna = 1, WSetMod 1 = W, > 0 discharging) overrides 124 while enabled."""
    img = dev.image
    p_max = float(dev.fleet.p_max_kw[dev.index])
    if _on(img, "704.WSetEna"):
        mode = img.raw(img.by_name["704.WSetMod"])
        if mode == 1:
            return {"p_set_kw": -_eng(img, "704.WSet") / 1000.0}
        if mode == 0:
            return {"p_set_kw": -p_max * _eng(img, "704.WSetPct") / 100.0}
        raise WriteRefused(3, f"WSetMod={mode} not supported (0 %, 1 W)")
    mode = img.raw(img.by_name["124.StorCtl_Mod"])
    if mode & 1 and not mode & 2:
        return {"p_set_kw": p_max * _eng(img, "124.InWRte") / 100.0}
    if mode & 2 and not mode & 1:
        return {"p_set_kw": -p_max * _eng(img, "124.OutWRte") / 100.0}
    if mode == 0:
        return {"p_set_kw": 0.0}
    raise WriteRefused(3, f"StorCtl_Mod={mode}: charge and discharge at once")


CONTROL_LAWS = {"pv_controls": _pv_controls, "pv_immediate": _pv_controls, "storage_124": _storage_124}


class EmulatedDevice:
    """Registers of one device; `refresh()` before a read, `apply_write()` for a write."""

    def __init__(self, device_id: str, kind: str, map_name: str, unit: int, twin, fleet=None,
                 index: int | None = None, rating_kva: float = 1.0, emulation=None):
        self.device_id, self.kind, self.unit = device_id, kind, unit
        self.map_name = map_name
        self.emulation = emulation  # scenarios.model.Emulation of the group (None: defaults)
        emu = emulation if emulation is not None else Emulation()
        self.seed = int(getattr(twin.scenario, "seed", 0) or 0)
        self.refresh_s = float(emu.refresh_s)
        # measurement noise (std, relative to the reading; Hz absolute), seeded per device and refresh
        self.noise = (emu.noise_p_pct / 100.0, emu.noise_v_pct / 100.0, emu.noise_hz)
        self._noise_key = zlib.crc32(device_id.encode())
        # open-loop response: setpoint -> 90 % time (s); targets: setpoint -> (target, snap tolerance)
        self.response_s = {name: float(getattr(emu, field)) for name, field in RESPONSE.items()}
        self.targets: dict[str, tuple[float, float]] = {}
        self.responding: set = set()  # the host's set of devices still moving toward a target
        self.v_bus: BusVoltage | None = None  # the host's interpolated bus voltages
        self.head_delta = None  # meter: () -> DER (p_kw, q_kvar) change since the last power flow
        self.image = DeviceImage(load_map(map_name), device_id, unit,
                                 identity(kind, device_id, self.seed, emulation))
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
        self.pf_target: float | None = None  # constant-PF mode: re-applied after each twin step
        self.q_active = False  # a reactive mode was enabled by a client write
        self.acc = None  # (wh_pos, wh_neg) arrays the host integrates per twin step
        self.pf_devices: set = set()  # the host's set of devices in constant-PF mode
        self.rating_kva = float(rating_kva)
        self._vn_v: float | None = None
        self._fresh = None  # (refresh period number, sf error, writes) the registers show
        self._writes = 0
        self.image.resolve_auto_scale(self.sources())
        self.refresh()

    # --- twin -> registers ------------------------------------------------------------------
    def sources(self) -> dict[str, float]:
        """Twin quantities by the names maps use (read: ...), for this device now."""
        tw = self.twin
        net = tw.net
        if self.kind == "meter":
            r = tw.grid.result
            bus = int(net.ext_grid.bus.iloc[0])
            ok = r is not None and r.converged
            out = {"p_kw": r.p_head_kw if ok else np.nan, "q_kvar": r.q_head_kvar if ok else np.nan,
                   "rating_kva": self.rating_kva}
        else:
            f, i = self.fleet, self.index
            bus = int(f.bus[i])
            out = {k: float(np.asarray(a)[i]) for k, a in f.telemetry().items()}
            for attr in ("s_rated_kva", "p_max_kw", "e_cap_kwh", "q_max_kvar", "p_limit_pct"):
                if hasattr(f, attr):
                    out[attr] = float(getattr(f, attr)[i])
            if self.kind == "battery":
                out["soc_min_pct"] = 100.0 * f.soc_min_kwh[i] / f.e_cap_kwh[i]
                out["e_avail_kwh"] = f.soc_kwh[i] - f.soc_min_kwh[i]
                out["cha_state"] = cha_state(float(f.p_kw[i]), float(f.soc_kwh[i]), float(f.soc_min_kwh[i]),
                                             float(f.e_cap_kwh[i]))
                out["rating_kva"] = out["p_max_kw"]
            else:
                out["rating_kva"] = out.get("s_rated_kva", out.get("p_max_kw", 1.0))
            for k in ("connected", "on"):
                if k in out:
                    out[k] = float(out[k])
            avail = bool(f.available[i])
            throttled = out.get("p_limit_pct", 100.0) < 100.0
            out["state"] = (5.0 if throttled else 4.0) if avail else 1.0  # 103 St: MPPT/THROTTLED/OFF
            if self.kind == "battery" and avail:
                # a battery tracks no power point: it runs at the power its storage control
                # commands (103 THROTTLED 5), or idles in STANDBY 8
                out["state"] = 8.0 if abs(float(f.p_kw[i])) < 1e-6 else 5.0
            out["st_on"] = 1.0 if avail else 0.0  # 701 St, ConnSt
            # 701 InvSt is 103 St one lower (OFF 0, RUNNING 3 = MPPT, THROTTLED 4, STANDBY 7)
            out["inv_st"] = out["state"] - 1.0 if self.kind in ("pv", "battery") else 3.0 * avail
            out["throt_pct"] = out.get("p_limit_pct", 100.0)
        if self._vn_v is None:
            self._vn_v = float(net.bus.vn_kv.at[bus]) * 1000.0
        vn_v = self._vn_v
        v_pu = np.nan
        if tw.grid.result is not None and tw.grid.v_meas_pu.size:
            pos = tw.pf.bus_position(bus)
            hold = self.v_bus is not None and self.v_bus.cur.size == tw.grid.v_meas_pu.size
            v_pu = self.v_bus.at(pos, tw.t_s) if hold else float(tw.grid.v_meas_pu[pos])
        if self.head_delta is not None and np.isfinite(out["p_kw"]):  # the head follows DER every step
            p_der, q_der = self.head_delta()
            out["p_kw"] += p_der
            out["q_kvar"] += q_der
        operating = self.fleet is None or bool(self.fleet.available[self.index])
        if any(self.noise) and operating:
            z = np.random.default_rng([self.seed, self._noise_key, math.floor(tw.t_s / self.refresh_s)]
                                      ).standard_normal(4)
            out["p_kw"] *= 1.0 + self.noise[0] * z[0]
            if "q_kvar" in out:
                out["q_kvar"] *= 1.0 + self.noise[0] * z[1]
            v_pu *= 1.0 + self.noise[1] * z[2]
        p, q = out["p_kw"], out.get("q_kvar", 0.0)
        s_kva = math.hypot(p, q)
        out.update(v_pu=v_pu, v_ll_v=v_pu * vn_v, v_ln_v=v_pu * vn_v / math.sqrt(3.0),
                   v_ln_rating_v=1.2 * vn_v / math.sqrt(3.0), va_kva=s_kva,
                   a=s_kva * 1000.0 / (math.sqrt(3.0) * v_pu * vn_v) if v_pu > 0 else np.nan,
                   a_rating=1.2 * out["rating_kva"] * 1000.0 / (math.sqrt(3.0) * vn_v),
                   # 103: PF magnitude |P|/S, negative when the device absorbs VAr (generator view)
                   pf=(abs(p) / s_kva * (-1.0 if q > 0 else 1.0)) if s_kva > 1e-9 else 1.0,
                   # 701 and 203: the sign of PF is the sign of the model's active power
                   # (701 W > 0 injecting; 203 W > 0 importing)
                   pf_gen=(abs(p) / s_kva * (-1.0 if p > 0 else 1.0)) if s_kva > 1e-9 else 1.0,
                   pf_load=(abs(p) / s_kva * (-1.0 if p < 0 else 1.0)) if s_kva > 1e-9 else 1.0)
        out["hz"] = grid_hz(tw.t_s, self.seed)
        if any(self.noise) and operating:
            out["hz"] += self.noise[2] * z[3]
        if self.acc is not None:
            out["wh_pos"] = float(self.acc[0][self.index or 0])
            out["wh_neg"] = float(self.acc[1][self.index or 0])
        return out

    def refresh(self) -> None:
        """Publish twin values into the registers, once per twin step (and after a write):
        twin quantities only change when the twin steps, so every read sees current values
        without recomputing them per request."""
        tw = self.twin
        key = (math.floor(tw.t_s / self.refresh_s), self.sf_error, self._writes)
        if self.frozen or key == self._fresh:
            return
        self.image.publish(self.sources(), self.sf_error)
        self._fresh = key

    def identity_objects(self) -> dict[int, bytes]:
        """Modbus device identification objects (FC 0x2B/0x0E): the same identity as SunSpec
        model 1 (Mn, Md, Vr): VendorName, ProductCode, MajorMinorRevision, ProductName, ModelName."""
        i = {k: str(v).encode()[:64] for k, v in self.image.identity.items()}
        return {0: i["manufacturer"], 1: i["model"], 2: i["firmware"], 4: i["model"], 5: i["model"]}

    # --- registers -> twin --------------------------------------------------------------------
    def apply_write(self, address: int, values: list[int]) -> None:
        """Validate and apply a client's register write; raise WriteRefused(2|3) to refuse."""
        img = self.image
        lo, hi = img.address_range()
        if address < lo or address + len(values) > hi:
            raise WriteRefused(2, f"write outside {lo}..{hi - 1}")
        bad = next((a for a in range(address, address + len(values)) if a not in img.writable_regs), None)
        if bad is not None:  # refused whole: IDs, lengths, read-only points, unmapped gaps
            raise WriteRefused(2, f"register {bad} is not writable")
        touched = img.covering(address, len(values))
        before, targets = list(img.regs), dict(self.targets)
        self._writes += 1
        img.regs[address - lo:address - lo + len(values)] = [int(v) & 0xFFFF for v in values]
        why = img.write_error(touched, before)
        if why is not None:
            img.regs[:] = before
            raise WriteRefused(3, why)
        try:
            setpoints = {b.write: img.engineering(b) for b in touched if b.write}
            if self.law is not None:
                setpoints.update(self.law(self))
            for name, value in setpoints.items():
                self.command(name, value)
            # the twin step that follows runs with the response's value at its end, so a
            # measurement read after it shows the output OLRT describes
            self.respond(self.twin.dt_s, [n for n in setpoints if n in self.targets])
        except SetpointError as e:
            img.regs[:] = before
            self.targets = targets
            raise WriteRefused(3, str(e)) from None
        except WriteRefused:
            img.regs[:] = before
            self.targets = targets
            raise

    # --- setpoint response (IEEE 1547-2018 open-loop response time) -------------------------
    def command(self, name: str, value: float) -> None:
        """Set a twin setpoint as the device would: validated at once (SetpointError: out of the
        device's limits), applied at once when the setpoint has no response time, else moved
        toward the target by `respond()` (after each device step; a client's write advances it
        once at once, see apply_write)."""
        f, i = self.fleet, self.index
        if self.response_s.get(name, 0.0) <= 0.0:
            f.write(name, i, value)
            return
        now = float(getattr(f, name)[i])
        f.write(name, i, value)  # validates against the device's limits
        if now == float(value):
            self.targets.pop(name, None)
            return
        lo, hi = f.limits(name)
        getattr(f, name)[i] = now
        self.targets[name] = (float(value), 1e-4 * max(float(hi[i] - lo[i]), 1e-6))
        self.responding.add(self)

    def respond(self, dt_s: float, names=None) -> None:
        """Move setpoints toward their targets as a first-order response that covers 90 % of a
        step in the open-loop response time (time constant OLRT / ln 10); a setpoint within
        1e-4 of its range of the target lands on it."""
        f, i = self.fleet, self.index
        for name in list(self.targets) if names is None else names:
            target, tol = self.targets[name]
            arr = getattr(f, name)
            x = float(arr[i])
            x += (target - x) * (1.0 - math.exp(-dt_s * math.log(10.0) / self.response_s[name]))
            if abs(target - x) <= tol:
                x = target
                del self.targets[name]
            arr[i] = x
        if not self.targets:
            self.responding.discard(self)
