"""Setpoint commands from the optimizer/DR/emergency logic on their way to devices.

A `Command` names a device by its controller-side id and a setpoint by its twin-neutral
name (the same names the device links map to protocol points). The `SafetyGate` turns a
batch into a `GateResult`; only its accepted/curtailed commands reach `DeviceLink.write`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Command:
    device_id: str  # e.g. "home_batteries/3"
    setpoint: str  # p_set_kw | p_limit_pct | q_set_kvar | p_max_set_kw | curtail_pct | ...
    value: float
    source: str = "dispatch"  # dispatch | dr | emergency | operator | volt_var | tcl
    reason: str = ""

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class Decision:
    """The gate's verdict on one command: the value that may be sent and why."""

    command: Command
    verdict: str  # accepted | curtailed | rejected
    value: float | None  # value to send (None when rejected)
    reasons: list[str] = field(default_factory=list)  # machine-readable codes, e.g. "v_high:bus7"

    def as_dict(self) -> dict:
        return {**self.command.as_dict(), "verdict": self.verdict, "sent_value": self.value,
                "reasons": self.reasons}


@dataclass
class GateResult:
    decisions: list[Decision] = field(default_factory=list)

    @property
    def accepted(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == "accepted"]

    @property
    def curtailed(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == "curtailed"]

    @property
    def rejected(self) -> list[Decision]:
        return [d for d in self.decisions if d.verdict == "rejected"]

    def to_send(self) -> list[Command]:
        """Commands to write, with the (possibly curtailed) values the gate allows."""
        return [Command(d.command.device_id, d.command.setpoint, d.value, d.command.source,
                        d.command.reason) for d in self.decisions if d.verdict != "rejected"]


class PassThroughGate:
    """Accepts everything. Never a default: a controller gets it only by name (tests, or a
    spec with `safety_gate: false`, controller.assembly, which logs a warning)."""

    def check(self, commands: list[Command], state=None) -> GateResult:
        return GateResult([Decision(c, "accepted", c.value) for c in commands])
