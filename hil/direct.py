"""In-process controller for pure-simulation runs: a DirectLink over the twin's fleets, a
SteppedClock moved by the twin's SimPy time, and the real Controller cycle scheduled with
`twin.add_periodic(scenario.controller.cycle_s)`. With `controller.safety_gate` (the
default) every command passes the SafetyGate on the controller's own copy of the scenario's
feeder, with the unmanaged load allocated from the head meter.

The scenario's DR events are handed to the controller as if a utility had sent them; the
controller's metered delivery ends up in summary.json under 'dr' and its cycle figures
under 'controller'.
"""

from __future__ import annotations

import numpy as np

from controller.clock import SteppedClock
from controller.core import Controller
from controller.kinds import kind
from controller.links.direct import DirectLink
from device_emulators.rtu import has_tap_changer

RTU = "rtu"
METER = "meter"  # the feeder-head revenue meter (what the emulators serve as meter/head)


class TwinPort:
    """The duck-typed port DirectLink reads and writes (no twin import in controller/).
    Besides the fleets it offers the feeder RTU's measurements as one 'rtu' device, with
    the same quantity names the IEC 104 link uses (v_pu.<k>, line_loading_pct.<k>, ...), and
    the feeder-head meter as one 'meter' device (p_kw, q_kvar: import positive). Like the IEC 104
    RTU it reports tap_pos.<k> (transformers with a tap changer) and cap_step.<k> (shunts) and
    takes the step commands 'rtu/trafo<k>' tap_pos and 'rtu/cap<k>' step (k: position in the
    net's table; a whole number within the element's range, else refused).
    TCL groups report the tcl gateway map's quantities (p_kw, on, t_in_c, t_offset_c, force,
    as ModbusLink reads them) plus t_set_c and the outdoor temperature t_out_c the thermostat
    shows (the controller's identification needs it)."""

    def __init__(self, twin):
        self.twin = twin
        self.fleets = twin.fleets

    def describe(self) -> dict:
        out = {}
        for name, f in self.fleets.items():
            ratings = {k: np.asarray(getattr(f, k), float) for k in kind(f.KIND).ratings
                       if hasattr(f, k)}
            out[name] = {"kind": f.KIND, "bus": f.bus, "ratings": ratings}
        head = np.array([int(self.twin.net.ext_grid.bus.iloc[0])])
        out[RTU] = {"kind": "rtu", "bus": head, "ratings": {}}
        out[METER] = {"kind": "meter", "bus": head, "ratings": {}}
        return out

    def rtu_values(self) -> dict[str, np.ndarray]:
        g = self.twin.grid
        r = g.result
        if r is None or not r.converged:
            return {}
        out = {f"v_pu.{k}": [v] for k, v in enumerate(g.v_meas_pu)}
        out.update({f"line_loading_pct.{k}": [v] for k, v in enumerate(r.line_loading_pct)})
        out.update({f"trafo_loading_pct.{k}": [v] for k, v in enumerate(r.trafo_loading_pct)})
        out["head_p_kw"], out["head_q_kvar"] = [r.p_head_kw], [r.q_head_kvar]
        for k, (el, col) in self._steps().items():
            out[k] = [float(self.twin.net[el[0]].at[el[1], col])]
        return out

    def _steps(self) -> dict:
        """{quantity: ((table, index), column)} of the RTU's tap changers and capacitor steps."""
        net = self.twin.net
        out = {}
        for k, idx in enumerate(net.trafo.index):
            if has_tap_changer(net, idx) and np.isfinite(net.trafo.at[idx, "tap_pos"]):  # as the RTU has them
                out[f"tap_pos.{k}"] = (("trafo", idx), "tap_pos")
        for k, idx in enumerate(net.shunt.index):
            out[f"cap_step.{k}"] = (("shunt", idx), "step")
        return out

    def _rtu_write(self, setpoint: str, element, value: float) -> None:
        name = {"tap_pos": "tap_pos", "step": "cap_step"}.get(setpoint)
        prefix = {"tap_pos": "trafo", "step": "cap"}.get(setpoint)
        el = str(element)
        if name is None or not el.startswith(prefix) or not el[len(prefix):].isdigit():
            raise ValueError(f"the in-process rtu takes no {setpoint!r} for {el!r}")
        (table, idx), col = self._steps().get(f"{name}.{el[len(prefix):]}", ((None, None), None))
        if table is None:
            raise ValueError(f"rtu: no {el}")
        row = self.twin.net[table].loc[idx]
        lo, hi = (0.0, float(row.max_step)) if table == "shunt" else (float(row.tap_min), float(row.tap_max))
        if not (np.isfinite(value) and value == int(value) and lo <= value <= hi):
            raise ValueError(f"rtu: {el} {setpoint}={value} outside {lo:g}..{hi:g}")
        self.twin.net[table].at[idx, col] = int(value)
        self.twin.pf.invalidate()
        self.twin.events.log(self.twin.t_s, "rtu_command", point=f"{el}.{setpoint}", value=value)

    def meter_values(self) -> dict[str, np.ndarray]:
        """Head import now: the last power flow's head power moved by how much the fleets'
        power changed since (the power flow runs less often than devices step; a real meter
        and real device telemetry are read at the same instant, so the gate's load allocation
        must not see devices from now against a head power from before their change)."""
        r = self.twin.grid.result
        if r is None or not r.converged:
            return {}
        der_now = sum(float(f.p_kw.sum()) for f in self.fleets.values())
        der_q_now = sum(float(f.q_kvar.sum()) for f in self.fleets.values())
        der_q_pf = getattr(r, "der_q_kvar", None)
        q = r.q_head_kvar + (der_q_now - der_q_pf if der_q_pf is not None else 0.0)
        return {"p_kw": [r.p_head_kw + der_now - r.der_p_kw], "q_kvar": [q]}

    def _telemetry(self, f) -> dict:
        tel = f.telemetry()
        if f.KIND == "tcl":
            tel = {**tel, "t_out_c": np.full(f.n, self.twin.weather.t_out_c(self.twin.t_s))}
        if f.KIND == "ev" and "departure_s" in tel:  # a smart charger's departure as epoch seconds
            tel = {**tel, "departure_t": self.twin.scenario.start.timestamp() + tel["departure_s"]}
        return tel

    def read(self) -> dict:
        return {**{name: self._telemetry(f) for name, f in self.fleets.items()}, RTU: self.rtu_values(),
                METER: self.meter_values()}

    def available(self) -> dict:
        return {**{name: f.available for name, f in self.fleets.items()}, RTU: np.ones(1, bool),
                METER: np.ones(1, bool)}

    def write(self, group: str, setpoint: str, index, value: float) -> None:
        if group == RTU and not isinstance(index, int):
            return self._rtu_write(setpoint, index, value)
        if group in (RTU, METER):
            raise ValueError(f"the in-process {group} view takes no commands")
        f = self.fleets[group]
        if not f.available[index]:
            raise ValueError(f"{group}/{index} is offline")
        f.write(setpoint, index, value)  # SetpointError is a ValueError


class Attached:
    def __init__(self, controller: Controller, link: DirectLink):
        self.controller = controller
        self.link = link

    def finish(self, twin) -> None:
        c = self.controller
        twin.kpi_extra["dr"] = c.dr_summary()
        tcl = {ev_id: rep for ev_id in c.dr for rep in [c.tcl.event_report(ev_id)] if rep}
        if tcl:  # per DR event: each TCL group's requested share and metered delivery
            twin.kpi_extra["dr_tcl"] = tcl
        k = c.kpis()
        k["writes"] = self.link.writes
        k["writes_refused"] = self.link.refused
        gate_report = getattr(c.gate, "last_report", None)
        if gate_report:
            k["gate_last_latency_ms"] = round(float(gate_report.get("latency_ms", 0.0)), 3)
        sched = getattr(c.scheduler, "last_stats", None)
        if sched is not None:
            k["last_solve_s"] = round(sched.solve_s, 4)
        twin.kpi_extra["controller"] = k


def feeder_model(scenario):
    from grid_models.feeders import build_feeder
    from scenarios.load import resolve_path

    fd = scenario.feeder
    return build_feeder(fd.kind, fd.code, resolve_path(scenario, fd.path) if fd.path else None, fd.with_der)


def attach_controller(twin, historian=None) -> Attached:
    """The scenario's controller (controller.assembly) on a DirectLink over the twin, its
    cycle scheduled on the twin's clock."""
    from controller.assembly import Spec, assemble

    s = twin.scenario
    t_start = s.start.timestamp()
    clock = SteppedClock(t_start)
    link = DirectLink(TwinPort(twin), clock)
    prices = twin.prices
    groups = [g for g, f in twin.fleets.items() if f.n > 0] + [RTU, METER]  # an empty group has no devices
    ctl = assemble(Spec.from_scenario(s), {g: link for g in groups}, clock,
                   historian, feeder_model(s), s.feeder.limits,
                   lambda times: np.array([prices.at(float(x) - t_start) for x in times]))

    def tick(tw):
        clock.advance_to(t_start + tw.t_s)
        ctl.cycle()

    twin.add_periodic(s.controller.cycle_s, tick)
    return Attached(ctl, link)
