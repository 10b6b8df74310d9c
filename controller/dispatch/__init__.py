"""Dispatch optimizer: day-ahead and real-time schedules for the DER fleet (Pyomo + HiGHS).
See controller/dispatch/README.md for the interface."""

from controller.dispatch.problem import (
                                         Batteries,
                                         DispatchProblem,
                                         EvSessions,
                                         FlexLoads,
                                         GridSensitivity,
                                         ProblemError,
                                         PvUnits,
                                         Schedule,
                                         SolveStats,
                                         TclBattery,
                                         Weights,
)

__all__ = ["Batteries", "DispatchProblem", "EvSessions", "FlexLoads", "GridSensitivity",
           "ProblemError", "PvUnits", "Schedule", "SolveStats", "TclBattery", "Weights"]
