"""The feeder RTU: an IEC 60870-5-104 outstation (device_emulators.iec104) over the twin's feeder.

Information object addresses (common address 1 by default), k = position in pandapower's
index of that element:
  1000+k  bus voltage, pu              M_ME_NC_1 (short float)
  2000+k  line loading, %              M_ME_NC_1
  3000+k  transformer loading, %       M_ME_NC_1
  3500+k  transformer tap position     M_ME_NC_1 (only transformers with a tap changer)
  3600+k  capacitor (shunt) step       M_ME_NC_1
  4000/4001 feeder head P kW / Q kvar  M_ME_NC_1
  5000+k  switch k closed              M_SP_NA_1
  6000+k  switch k command             C_SC_NA_1 (select-before-operate when sbo_switches)
  7000+k  transformer k tap setpoint   C_SE_NC_1 (integer within tap_min..tap_max; tap changers only)
  7500+k  capacitor (shunt) k step     C_SE_NC_1 (integer within 0..max_step)
Measured values go out spontaneously when they move beyond their deadband and periodically
every `cycle_ms`; switch states only spontaneously and on general interrogation. Commands act on
the twin's net (and invalidate the power flow's recycled internals).
"""

from __future__ import annotations

import math

import numpy as np

from device_emulators.iec104 import (C_SC_NA_1, C_SE_NC_1, M_ME_NC_1, M_SP_NA_1, SPONTANEOUS, CommandPoint,
                                     MonitorPoint, Outstation)

BUS, LINE, TRAFO, TAP, HEAD, SWITCH, SWITCH_CMD, TAP_CMD = 1000, 2000, 3000, 3500, 4000, 5000, 6000, 7000
SHUNT, SHUNT_CMD = 3600, 7500


def has_tap_changer(net, row) -> bool:
    """A transformer with an operable tap changer (finite limits and a changer type set)."""
    t = net.trafo
    lo, hi = t.at[row, "tap_min"], t.at[row, "tap_max"]
    kind = t.at[row, "tap_changer_type"] if "tap_changer_type" in t else None
    return bool(np.isfinite(lo) and np.isfinite(hi) and isinstance(kind, str) and kind)


def _integer_in(v: float, lo: float, hi: float) -> bool:
    """Finite, a whole number and within lo..hi (checked before any arithmetic on v)."""
    return math.isfinite(v) and v == int(v) and lo <= v <= hi


class FeederRtu:
    def __init__(self, twin, lock, host: str = "127.0.0.1", port: int = 2404, common_address: int = 1,
                 deadband_pu: float = 0.002, deadband_pct: float = 1.0, deadband_kw: float = 10.0,
                 cycle_ms: int = 10_000, sbo_switches: bool = True, select_timeout_s: float = 5.0,
                 ssl_context=None):
        self.twin, self.lock, self.host, self.port = twin, lock, host, port
        self.common_address = common_address
        self.deadband = {BUS: deadband_pu, LINE: deadband_pct, TRAFO: deadband_pct, TAP: 0.5, SHUNT: 0.5,
                         HEAD: deadband_kw}
        self.os_kw = dict(ca=common_address, cycle_s=cycle_ms / 1000.0, select_timeout_s=select_timeout_s,
                          ssl_context=ssl_context)  # TLS: device_emulators.iec104.server_tls_context
        self.outstation: Outstation | None = None
        net = twin.net
        self.taps = [k for k, row in enumerate(net.trafo.index) if has_tap_changer(net, row)]
        self.measured: dict[int, tuple[MonitorPoint, int]] = {}
        for base, ks in ((BUS, range(len(net.bus))), (LINE, range(len(net.line))),
                         (TRAFO, range(len(net.trafo))), (TAP, self.taps), (SHUNT, range(len(net.shunt))),
                         (HEAD, range(2))):
            for k in ks:
                self.measured[base + k] = (MonitorPoint(base + k, M_ME_NC_1), base)
        self.switch_points = [MonitorPoint(SWITCH + k, M_SP_NA_1, cyclic=False) for k in range(len(net.switch))]
        self.command_points = (
            [CommandPoint(SWITCH_CMD + k, C_SC_NA_1, self._switch_handler(k), sbo=sbo_switches)
             for k in range(len(net.switch))]
            + [CommandPoint(TAP_CMD + k, C_SE_NC_1, self._tap_handler(k)) for k in self.taps]
            + [CommandPoint(SHUNT_CMD + k, C_SE_NC_1, self._shunt_handler(k)) for k in range(len(net.shunt))])
        self.invalid = False
        self.last_sent: dict[int, float] = {}
        self.commands = 0

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.publish(transmit=False)
        os_ = Outstation(self.host, self.port, **self.os_kw)
        os_.points = {p.ioa: p for p, _ in self.measured.values()} | {p.ioa: p for p in self.switch_points}
        os_.commands = {c.ioa: c for c in self.command_points}
        os_.start()
        self.port = os_.port
        self.outstation = os_

    def stop(self) -> None:
        if self.outstation is not None:
            self.outstation.stop()
            self.outstation = None

    # --- twin -> points --------------------------------------------------------------------------
    def values(self) -> dict[int, float]:
        tw = self.twin
        r = tw.grid.result
        out: dict[int, float] = {}
        if r is not None and r.converged:
            for k, v in enumerate(tw.grid.v_meas_pu):
                out[BUS + k] = float(v)
            for k, v in enumerate(r.line_loading_pct):
                out[LINE + k] = float(v)
            for k, v in enumerate(r.trafo_loading_pct):
                out[TRAFO + k] = float(v)
            out[HEAD], out[HEAD + 1] = float(r.p_head_kw), float(r.q_head_kvar)
        taps = tw.net.trafo.tap_pos.to_numpy()
        for k in self.taps:
            out[TAP + k] = float(taps[k]) if np.isfinite(taps[k]) else 0.0
        for k, step in enumerate(tw.net.shunt.step.to_numpy()):
            out[SHUNT + k] = float(step)
        return out

    def publish(self, transmit: bool = True) -> None:
        """Copy twin values into points; send those beyond their deadband (and switch changes)
        spontaneously. Values that did not move are never sent as spontaneous. A point with no
        value yet (no power flow before start) is invalid (IV) until its first value, which is
        then sent spontaneously: it changed from what an interrogation reported."""
        with self.lock:
            vals = self.values()
            closed = self.twin.net.switch.closed.to_numpy().copy()
        moved, flipped = [], []
        for ioa, (pt, _) in self.measured.items():
            if ioa not in vals and ioa not in self.last_sent:
                pt.invalid = True
        for ioa, v in vals.items():
            pt, base = self.measured[ioa]
            pt.value, pt.invalid = v, self.invalid
            last = self.last_sent.get(ioa)
            if last is None or math.isnan(last) or abs(v - last) > self.deadband[base]:
                self.last_sent[ioa] = v
                if last is not None or transmit:
                    moved.append(pt)
        for k, pt in enumerate(self.switch_points):
            if bool(pt.value) != bool(closed[k]):
                pt.value = float(bool(closed[k]))
                flipped.append(pt)
        if transmit and self.outstation is not None:
            self.outstation.send(M_ME_NC_1, SPONTANEOUS, moved)
            self.outstation.send(M_SP_NA_1, SPONTANEOUS, flipped)

    def set_invalid(self, invalid: bool) -> None:
        """The IV bit on every measured value (fault iec104_invalid), sent at once."""
        self.invalid = invalid
        for pt, _ in self.measured.values():
            pt.invalid = invalid
        if self.outstation is not None:
            self.outstation.send(M_ME_NC_1, SPONTANEOUS, [pt for pt, _ in self.measured.values()])

    # --- commands -> twin (worker thread; validation before any arithmetic on the value) --------
    def _switch_handler(self, k: int):
        def handle(value: float) -> bool:
            with self.lock:
                net = self.twin.net
                net.switch.loc[net.switch.index[k], "closed"] = bool(value)
                self.twin.pf.invalidate()
                self.twin.events.log(self.twin.t_s, "rtu_command", point=f"switch{k}", value=bool(value))
            self.commands += 1
            return True
        return handle

    def _tap_handler(self, k: int):
        return self._step_handler("trafo", k, "tap_pos", lambda t, row: (float(t.at[row, "tap_min"]),
                                                                          float(t.at[row, "tap_max"])),
                                  f"trafo{k}.tap_pos")

    def _shunt_handler(self, k: int):
        return self._step_handler("shunt", k, "step", lambda t, row: (0.0, float(t.at[row, "max_step"])),
                                  f"shunt{k}.step")

    def _step_handler(self, table: str, k: int, column: str, limits, label: str):
        """A setpoint that must be an integer within the element's limits (tap, capacitor step)."""
        def handle(value: float) -> bool:
            t = getattr(self.twin.net, table)
            row = t.index[k]
            if not _integer_in(value, *limits(t, row)):
                return False
            with self.lock:
                t.at[row, column] = int(value)
                self.twin.pf.invalidate()
                self.twin.events.log(self.twin.t_s, "rtu_command", point=label, value=value)
            self.commands += 1
            return True
        return handle
