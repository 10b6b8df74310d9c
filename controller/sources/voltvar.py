"""Volt/VAR command source: whenever the gate's picture of the feeder has a bus voltage out of
band (or within `margin_pu` of it), the coordinated reactive dispatch (controller/voltvar.py:
LP on the gate's sensitivities, confirmed by AC power flow) sets inverter and battery
`q_set_kvar`, and proposes one OLTC step through the RTU when vars run out. Its commands are
checked by the safety gate like every other. Needs the SafetyGate (its model and power flow)."""

from __future__ import annotations

import logging

import numpy as np

from controller.commands import Command
from controller.voltvar import optimal_reactive_dispatch

log = logging.getLogger("controller.voltvar")


class VoltVarSource:
    name, priority = "volt_var", 2.5  # above the schedule, below DR, operator and emergency

    def __init__(self, ctl, margin_pu: float = 0.003, max_failures: int = 3):
        self.ctl = ctl  # stage (gate, snapshot_fn), feeder_limits, hist, io (write failures)
        self.margin_pu = margin_pu
        self.max_failures = max_failures
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
        except Exception as e:  # noqa: BLE001 - volt/VAR is best effort; the cycle goes on
            log.warning("volt/var failed at %.0f: %s", t, e)
            ctl.hist.raise_alarm(t, "voltvar_failed", None, str(e)[:300])
            return []
        self.last = {"t": t, "in_band": d.in_band, "q_total_kvar": round(d.q_total_kvar, 3),
                     "v_max_pu": round(float(np.nanmax(d.v_after_pu)), 4), "commands": len(d.commands)}
        # a device that keeps refusing its reactive setpoint (a link without a Q point) is left out
        fails = ctl.io.write_failures
        cmds = [c for c in d.commands if fails.get((c.device_id, c.setpoint), 0) < self.max_failures]
        return cmds + ([d.tap_command] if d.tap_command is not None else [])
