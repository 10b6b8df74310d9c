"""Step-timing statistics of a real-time run: lateness percentiles, overruns, fell-behind."""

from __future__ import annotations

import numpy as np


def lateness_stats(lateness_s: np.ndarray, compute_s: np.ndarray, step_wall_s: float,
                   behind_s: float) -> dict:
    """Summary of per-step lateness (wall start minus scheduled start, s) and compute time.

    An overrun is a step whose compute took longer than its wall budget; the run `fell_behind`
    when any step started more than `behind_s` late (the twin could not keep real time)."""
    late = np.asarray(lateness_s, float)
    comp = np.asarray(compute_s, float)
    if late.size == 0:
        return {"steps": 0, "fell_behind": False}
    ms = lambda x: round(float(x) * 1e3, 3)
    return {
        "steps": int(late.size),
        "step_wall_s": step_wall_s,
        "lateness_p50_ms": ms(np.percentile(late, 50)),
        "lateness_p99_ms": ms(np.percentile(late, 99)),
        "lateness_max_ms": ms(late.max()),
        "compute_p50_ms": ms(np.percentile(comp, 50)),
        "compute_p99_ms": ms(np.percentile(comp, 99)),
        "compute_max_ms": ms(comp.max()),
        "overruns": int((comp > step_wall_s).sum()),
        "behind_threshold_s": behind_s,
        "steps_behind": int((late > behind_s).sum()),
        "fell_behind": bool((late > behind_s).any()),
    }
