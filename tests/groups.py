"""Build the cycle's per-group arrays (controller.state.GroupState) from plain lists, for
tests of the device kinds, DR allocation and the emergency plan."""

import numpy as np

from controller.state import Q_GOOD, GroupState


def group(name: str, kind: str, n: int, available=None, **cols) -> GroupState:
    """Columns named like ratings (`r_<name>`) or telemetry (`<name>`), one value per device
    (NaN: not reported)."""
    ratings = {k[2:]: np.asarray(v, float) for k, v in cols.items() if k.startswith("r_")}
    values = {k: np.asarray(v, float) for k, v in cols.items() if not k.startswith("r_")}
    quality = {k: np.full(n, Q_GOOD, np.int8) for k in values}
    av = np.ones(n, bool) if available is None else np.asarray(available, bool)
    return GroupState(name, kind, [f"{name}/{i}" for i in range(n)], np.zeros(n, np.int64), ratings,
                      values, quality, np.zeros(n), av, np.ones(n, bool))
