"""Operating-limit checks on power-flow results, returned as structured violations."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Violation:
    kind: str  # v_low | v_high | line_overload | trafo_overload
    element: int  # pandapower index of the bus, line or transformer
    value: float  # v_pu or loading_pct
    limit: float

    def as_dict(self) -> dict:
        return asdict(self)


def check_limits(v_pu: np.ndarray, bus_index: np.ndarray, line_loading_pct: np.ndarray,
                 line_index: np.ndarray, trafo_loading_pct: np.ndarray, trafo_index: np.ndarray,
                 limits) -> list[Violation]:
    """Every bus outside [v_min_pu, v_max_pu] and every branch above its loading limit."""
    out: list[Violation] = []
    for i in np.flatnonzero(v_pu < limits.v_min_pu):
        out.append(Violation("v_low", int(bus_index[i]), float(v_pu[i]), limits.v_min_pu))
    for i in np.flatnonzero(v_pu > limits.v_max_pu):
        out.append(Violation("v_high", int(bus_index[i]), float(v_pu[i]), limits.v_max_pu))
    for i in np.flatnonzero(line_loading_pct > limits.line_loading_max_pct):
        out.append(Violation("line_overload", int(line_index[i]), float(line_loading_pct[i]),
                             limits.line_loading_max_pct))
    for i in np.flatnonzero(trafo_loading_pct > limits.trafo_loading_max_pct):
        out.append(Violation("trafo_overload", int(trafo_index[i]), float(trafo_loading_pct[i]),
                             limits.trafo_loading_max_pct))
    return out
