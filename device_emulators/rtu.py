"""The feeder RTU: an IEC 60870-5-104 outstation (c104 Server) over the twin's feeder.

Information object addresses (common address 1 by default), k = position in pandapower's
index of that element:
  1000+k  bus voltage, pu              M_ME_NC_1 (short float)
  2000+k  line loading, %              M_ME_NC_1
  3000+k  transformer loading, %       M_ME_NC_1
  3500+k  transformer tap position     M_ME_NC_1
  3600+k  capacitor (shunt) step       M_ME_NC_1
  4000/4001 feeder head P kW / Q kvar  M_ME_NC_1
  5000+k  switch k closed              M_SP_NA_1
  6000+k  switch k command             C_SC_NA_1 (select-before-operate when sbo_switches)
  7000+k  transformer k tap setpoint   C_SE_NC_1 (integer within tap_min..tap_max)
  7500+k  capacitor (shunt) k step     C_SE_NC_1 (integer within 0..max_step)
Measured values go out spontaneously when they move beyond their deadband and cyclically
every `cycle_ms`; general interrogation returns every monitoring point. Commands act on the
twin's net (and invalidate the power flow's recycled internals).
"""

# no "from __future__ import annotations": c104 checks the real annotation objects

import math

import c104
import numpy as np

BUS, LINE, TRAFO, TAP, HEAD, SWITCH, SWITCH_CMD, TAP_CMD = 1000, 2000, 3000, 3500, 4000, 5000, 6000, 7000
SHUNT, SHUNT_CMD = 3600, 7500


class FeederRtu:
    def __init__(self, twin, lock, host: str = "127.0.0.1", port: int = 2404, common_address: int = 1,
                 deadband_pu: float = 0.002, deadband_pct: float = 1.0, deadband_kw: float = 10.0,
                 cycle_ms: int = 10_000, sbo_switches: bool = True):
        self.twin, self.lock, self.host, self.port = twin, lock, host, port
        self.common_address = common_address
        self.deadband = {BUS: deadband_pu, LINE: deadband_pct, TRAFO: deadband_pct, TAP: 0.5, SHUNT: 0.5,
                         HEAD: deadband_kw}
        self.server = c104.Server(ip=host, port=port, tick_rate_ms=50, select_timeout_ms=5000)
        st = self.server.add_station(common_address=common_address)
        net = twin.net
        self.measured: dict[int, tuple[c104.Point, int]] = {}
        for base, n in ((BUS, len(net.bus)), (LINE, len(net.line)), (TRAFO, len(net.trafo)),
                        (TAP, len(net.trafo)), (SHUNT, len(net.shunt)), (HEAD, 2)):
            for k in range(n):
                pt = st.add_point(io_address=base + k, type=c104.Type.M_ME_NC_1, report_ms=cycle_ms)
                self.measured[base + k] = (pt, base)
        self.switch_points = []
        mode = c104.CommandMode.SELECT_AND_EXECUTE if sbo_switches else c104.CommandMode.DIRECT
        for k in range(len(net.switch)):
            mon = st.add_point(io_address=SWITCH + k, type=c104.Type.M_SP_NA_1, report_ms=cycle_ms)
            cmd = st.add_point(io_address=SWITCH_CMD + k, type=c104.Type.C_SC_NA_1, command_mode=mode)
            cmd.on_receive(callable=self._on_switch)
            self.switch_points.append(mon)
        for k in range(len(net.trafo)):
            cmd = st.add_point(io_address=TAP_CMD + k, type=c104.Type.C_SE_NC_1)
            cmd.on_receive(callable=self._on_tap)
        for k in range(len(net.shunt)):
            cmd = st.add_point(io_address=SHUNT_CMD + k, type=c104.Type.C_SE_NC_1)
            cmd.on_receive(callable=self._on_shunt)
        self.invalid = False
        self.last_sent: dict[int, float] = {}
        self.commands = 0

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        self.publish(transmit=False)
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

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
        for k, tap in enumerate(tw.net.trafo.tap_pos.to_numpy()):
            out[TAP + k] = float(tap) if np.isfinite(tap) else 0.0
        for k, step in enumerate(tw.net.shunt.step.to_numpy()):
            out[SHUNT + k] = float(step)
        return out

    def publish(self, transmit: bool = True) -> None:
        """Copy twin values into points; send those beyond their deadband spontaneously."""
        with self.lock:
            vals = self.values()
            closed = self.twin.net.switch.closed.to_numpy().copy()
        for ioa, v in vals.items():
            pt, base = self.measured[ioa]
            pt.value = v
            if self.invalid != (not pt.quality.is_good()):
                pt.quality = c104.Quality.Invalid if self.invalid else c104.Quality()
            last = self.last_sent.get(ioa)
            if transmit and self.server.has_active_connections and (
                    last is None or math.isnan(last) or abs(v - last) > self.deadband[base]):
                pt.transmit(cause=c104.Cot.SPONTANEOUS)
                self.last_sent[ioa] = v
            elif not transmit:
                self.last_sent[ioa] = v
        for k, pt in enumerate(self.switch_points):
            if bool(pt.value) != bool(closed[k]):
                pt.value = bool(closed[k])
                if transmit and self.server.has_active_connections:
                    pt.transmit(cause=c104.Cot.SPONTANEOUS)

    def set_invalid(self, invalid: bool) -> None:
        self.invalid = invalid
        self.last_sent.clear()
        self.publish()

    # --- commands -> twin -------------------------------------------------------------------------
    def _on_switch(self, point: c104.Point, previous_info: c104.Information,
                   message: c104.IncomingMessage) -> c104.ResponseState:
        k = point.io_address - SWITCH_CMD
        with self.lock:
            self.twin.net.switch.loc[self.twin.net.switch.index[k], "closed"] = bool(point.value)
            self.twin.pf.invalidate()
            self.twin.events.log(self.twin.t_s, "rtu_command", point=f"switch{k}", value=bool(point.value))
        self.commands += 1
        return c104.ResponseState.SUCCESS

    def _on_tap(self, point: c104.Point, previous_info: c104.Information,
                message: c104.IncomingMessage) -> c104.ResponseState:
        k = point.io_address - TAP_CMD
        net = self.twin.net
        row = net.trafo.index[k]
        v = float(point.value)
        lo, hi = net.trafo.at[row, "tap_min"], net.trafo.at[row, "tap_max"]
        if (v != round(v) or not np.isfinite(lo) or not np.isfinite(hi) or not lo <= v <= hi):
            return c104.ResponseState.FAILURE
        with self.lock:
            net.trafo.at[row, "tap_pos"] = v
            self.twin.pf.invalidate()
            self.twin.events.log(self.twin.t_s, "rtu_command", point=f"trafo{k}.tap_pos", value=v)
        self.commands += 1
        return c104.ResponseState.SUCCESS

    def _on_shunt(self, point: c104.Point, previous_info: c104.Information,
                  message: c104.IncomingMessage) -> c104.ResponseState:
        k = point.io_address - SHUNT_CMD
        net = self.twin.net
        row = net.shunt.index[k]
        v = float(point.value)
        if v != round(v) or not 0 <= v <= float(net.shunt.at[row, "max_step"]):
            return c104.ResponseState.FAILURE
        with self.lock:
            net.shunt.at[row, "step"] = int(v)
            self.twin.pf.invalidate()
            self.twin.events.log(self.twin.t_s, "rtu_command", point=f"shunt{k}.step", value=v)
        self.commands += 1
        return c104.ResponseState.SUCCESS
