"""Volt/VAR command source: whenever the gate's picture of the feeder has a bus voltage out of
band (or within `margin_pu` of it), the coordinated reactive dispatch (controller/voltvar.py:
LP on the gate's sensitivities, confirmed by AC power flow) sets inverter and battery
`q_set_kvar`; when vars run out and the feeder RTU has capacitor banks or an OLTC, it proposes
one step through the RTU per cycle, each tap changer or capacitor bank at most once per
`step_delay_s` (its own time delay; no hunting: a step that would push the other side of the
band out is never taken). Its commands
are checked by the safety gate like every other. Needs the SafetyGate (its model and power flow).

Devices whose link says it cannot write reactive power (`DeviceLink.writable`) get no
`q_set_kvar`; where a link cannot tell, a device is left out after `max_failures` failed writes.
"""

from __future__ import annotations

import logging

import numpy as np

from controller.commands import Command
from controller.voltvar import band_excess_pu, optimal_reactive_dispatch, step_command

log = logging.getLogger("controller.voltvar")


class VoltVarSource:
    name, priority = "volt_var", 2.5  # above the schedule, below DR, operator and emergency

    def __init__(self, ctl, margin_pu: float = 0.003, max_failures: int = 3, step_delay_s: float = 300.0):
        self.ctl = ctl  # stage (gate, snapshot_fn), feeder_limits, hist, io (write failures), links
        self.margin_pu = margin_pu
        self.max_failures = max_failures
        self.step_delay_s = step_delay_s
        self.last_step_t: dict[str, float] = {}  # device id (rtu/trafo<k>, rtu/cap<k>) -> time of its last step
        self.steps: list[dict] = []  # every tap/capacitor step proposed (t, device, value, expected)
        self.last: dict = {}

    def commands(self, t: float, state) -> list[Command]:
        ctl = self.ctl
        gate, snap, lim = ctl.gate, ctl.snapshot_fn, ctl.feeder_limits
        if snap is None or lim is None or not hasattr(gate, "operating_point"):
            return []
        try:
            st = snap(state)
            op = gate.operating_point(st)
            if op is None:
                return []
            v = op["res"].v_pu
            if (np.nanmax(v) <= lim.v_max_pu - self.margin_pu and np.nanmin(v) >= lim.v_min_pu + self.margin_pu
                    and not np.any(np.abs(st.q_kvar) > 1e-6)):
                return []
            d = optimal_reactive_dispatch(gate, st, lim, margin_pu=self.margin_pu)
            step = self._step(t, state, gate, d, lim)
        except Exception as e:  # noqa: BLE001 - volt/VAR is best effort; the cycle goes on
            log.warning("volt/var failed at %.0f: %s", t, e)
            ctl.hist.raise_alarm(t, "voltvar_failed", None, str(e)[:300])
            return []
        self.last = {"t": t, "in_band": d.in_band, "q_total_kvar": round(d.q_total_kvar, 3),
                     "v_max_pu": round(float(np.nanmax(d.v_after_pu)), 4), "commands": len(d.commands),
                     "steps": len(self.steps)}
        cmds = [c for c in d.commands if self._can_write_q(c)]
        return cmds + ([step] if step is not None else [])

    def _can_write_q(self, c: Command) -> bool:
        """The device's link can write its reactive setpoint (asked where the link can tell,
        else learnt: not after `max_failures` failed writes in a row)."""
        group = c.device_id.rpartition("/")[0]
        link = self.ctl.links.get(group)
        can = getattr(link, "writable", None)
        w = can(c.device_id) if can is not None else None
        if w is not None:
            return c.setpoint in w
        return self.ctl.io.write_failures.get((c.device_id, c.setpoint), 0) < self.max_failures

    def _step(self, t: float, state, gate, d, lim) -> Command | None:
        """One capacitor/tap step when vars cannot hold the band (`margin_pu` inside it) and the
        feeder has an RTU, among the elements whose last step is at least `step_delay_s` old."""
        if sum(band_excess_pu(d.v_after_pu, lim, self.margin_pu)) <= 0:
            return None
        rtu = next((g.group for g in state.groups.values() if g.kind == "rtu" and g.usable().any()), None)
        if rtu is None:
            return None
        busy = {dev for dev, t0 in self.last_step_t.items() if t - t0 < self.step_delay_s}
        cmd, expect = step_command(gate, d.p_kw, d.q_kvar, d.v_before_pu, lim, rtu, self.margin_pu, busy)
        if cmd is None:
            return None
        self.last_step_t[cmd.device_id] = t
        row = {"t": t, "device_id": cmd.device_id, "setpoint": cmd.setpoint, "value": cmd.value,
               "why": cmd.reason, "v_min_pu": round(float(np.nanmin(d.v_before_pu)), 4),
               "v_max_pu": round(float(np.nanmax(d.v_before_pu)), 4), "expected": expect}
        self.steps.append(row)
        self.ctl.hist.log_event(t, "voltvar_step", **{k: v for k, v in row.items() if k != "t"})
        return cmd
