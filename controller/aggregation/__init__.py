"""TCL aggregation on the controller side: parameter identification from telemetry, the
virtual-battery and state-bin Markov models of a population, and a tracking dispatch law.

Nothing here imports the twin: inputs are telemetry arrays (one row per device, in the
order of the group's device ids), outputs are arrays or `controller.commands.Command`s.
"""

from controller.aggregation.bin_model import BinModel
from controller.aggregation.identify import EtpEstimate, EtpIdentifier
from controller.aggregation.tracking import PriorityStackTracker, to_commands
from controller.aggregation.virtual_battery import VirtualBattery

__all__ = ["BinModel", "EtpEstimate", "EtpIdentifier", "PriorityStackTracker", "VirtualBattery",
           "to_commands"]
