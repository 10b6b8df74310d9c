"""The safety gate as a stage of the cycle: turns the fleet state into what the gate checks,
fails safe (a gate that raises rejects the whole batch), counts the verdicts and keeps one
alarm per device while its commands are curtailed or rejected."""

from __future__ import annotations

import logging

from controller.commands import Command, Decision, GateResult

log = logging.getLogger("controller.cycle")


class GateStage:
    def __init__(self, gate, snapshot_fn, hist):
        if gate is None:
            raise ValueError("a controller needs a gate: SafetyGate, or PassThroughGate by name")
        self.gate, self.snapshot_fn, self.hist = gate, snapshot_fn, hist
        self.last_gate: GateResult | None = None
        self.gate_totals = {"accepted": 0, "curtailed": 0, "rejected": 0}
        self._gate_alarmed: set[str] = set()
        self.basis: dict = {}  # which grid state the gate used: estimate or allocation (and why)
        self._bad_t = None
        self._failed_alarm = True  # a gate_failed alarm may be active (from before a restart): clear it once

    def _note_basis(self, t: float) -> None:
        """The snapshot's basis for the report; a measurement the estimator removed as bad data
        raises one alarm (bad_measurement) and an event naming it."""
        bl = getattr(self.snapshot_fn, "base_load", None)
        if bl is None:
            self.basis = {"basis": "allocation"}
            return
        self.basis = dict(bl.last)
        if self.basis.get("removed") and self.basis.get("t") != self._bad_t:
            self._bad_t = self.basis["t"]
            what = ", ".join(f"{r['type']}@{r['element_type']}{r['element']}={r['value']:.4g}"
                             for r in self.basis["removed"])
            self.hist.log_event(t, "state_estimate_bad_data", removed=self.basis["removed"])
            self.hist.raise_alarm(t, "bad_measurement", "rtu", f"removed by the state estimator: {what}"[:300])

    def check(self, t: float, cmds: list[Command], fleet) -> GateResult:
        """The gate's verdict on the batch; a failing gate rejects everything (fail safe).
        Rejections and curtailments raise alarms (one per device while it lasts) and an event."""
        try:
            state = self.snapshot_fn(fleet) if self.snapshot_fn else fleet
            self._note_basis(t)
            result = self.gate.check(cmds, state)
        except Exception as e:  # never write what the gate did not see through
            log.warning("safety gate failed at %.0f: %s", t, e)
            self.hist.raise_alarm(t, "gate_failed", None, f"{type(e).__name__}: {e}"[:300])
            self._failed_alarm = True
            result = GateResult([Decision(c, "rejected", None, ["gate_error"]) for c in cmds])
        else:
            if self._failed_alarm:  # one database write when the gate works again, not one per cycle
                self.hist.clear_alarm("gate_failed", None)
                self._failed_alarm = False
        self.last_gate = result
        counts = {"accepted": 0, "curtailed": 0, "rejected": 0}
        reasons: dict[str, int] = {}
        for d in result.decisions:
            counts[d.verdict] = counts.get(d.verdict, 0) + 1
            dev = d.command.device_id
            if d.verdict == "accepted":
                if dev in self._gate_alarmed:
                    self._gate_alarmed.discard(dev)
                    self.hist.clear_alarm("gate_rejected", dev)
                    self.hist.clear_alarm("gate_curtailed", dev)
                continue
            for r in d.reasons:
                reasons[r] = reasons.get(r, 0) + 1
            self._gate_alarmed.add(dev)
            self.hist.raise_alarm(t, "gate_" + d.verdict, dev,
                                  f"{d.command.setpoint}={d.command.value:g} ({d.command.source}) "
                                  f"{d.verdict}" + ("" if d.value is None else f" to {d.value:g}")
                                  + f": {','.join(d.reasons) or 'no reason given'}")
        for k, v in counts.items():
            self.gate_totals[k] = self.gate_totals.get(k, 0) + v
        if counts["curtailed"] or counts["rejected"]:
            self.hist.log_event(t, "gate", curtailed=counts["curtailed"], rejected=counts["rejected"],
                                accepted=counts["accepted"], reasons=reasons)
        return result
