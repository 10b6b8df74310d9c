"""Safety gate: every command batch is checked against device limits, ramps and the feeder."""

from controller.safety.gate import SafetyConfig, SafetyGate, alarms
from controller.safety.state import GridSnapshot

__all__ = ["GridSnapshot", "SafetyConfig", "SafetyGate", "alarms"]
