"""Draw per-device parameters from the scenario's distributions (seeded)."""

from __future__ import annotations

import numpy as np

from scenarios.model import Choice, Normal, Uniform


class ParamError(ValueError):
    """A fleet parameter is unknown or out of its physical range; one-line message."""


def draw(spec, n: int, rng: np.random.Generator) -> np.ndarray:
    """n samples of a constant, uniform, normal (optionally clipped) or choice distribution."""
    if isinstance(spec, (int, float)):
        return np.full(n, float(spec))
    if isinstance(spec, Uniform):
        return rng.uniform(spec.low, spec.high, n)
    if isinstance(spec, Normal):
        x = rng.normal(spec.mean, spec.std, n)
        lo = -np.inf if spec.min is None else spec.min
        hi = np.inf if spec.max is None else spec.max
        return np.clip(x, lo, hi)
    if isinstance(spec, Choice):
        w = None if spec.weights is None else np.asarray(spec.weights, float) / max(spec.weights)
        w = None if w is None else w / w.sum()  # scaled first: huge weights must not overflow the sum
        return rng.choice(np.asarray(spec.values, float), size=n, p=w)
    raise ParamError(f"unsupported parameter spec {spec!r}")


def draw_all(group, defaults: dict[str, object], rng: np.random.Generator,
             bounds: dict[str, tuple[float, float]] | None = None) -> dict[str, np.ndarray]:
    """Every parameter of a fleet class: scenario values over class defaults, range-checked."""
    unknown = set(group.params) - set(defaults)
    if unknown:
        raise ParamError(f"fleet '{group.name}': params.{min(unknown)}: unknown params {sorted(unknown)} "
                         f"for kind {group.kind}; known: {', '.join(sorted(defaults))}")
    out = {}
    for key, default in defaults.items():
        try:
            arr = draw(group.params.get(key, default), group.count, rng)
        except (ValueError, OverflowError) as e:  # numpy refuses ranges beyond float limits
            raise ParamError(f"fleet '{group.name}': params.{key}: cannot draw values: {e}") from None
        lo, hi = (bounds or {}).get(key, (-np.inf, np.inf))
        if arr.size and (arr.min() < lo or arr.max() > hi):
            bad = arr[(arr < lo) | (arr > hi)][0]
            raise ParamError(f"fleet '{group.name}': params.{key}: value {bad:g} outside [{lo:g}, {hi:g}]")
        out[key] = arr
    return out


def check_order(group, p: dict[str, np.ndarray], lo_key: str, hi_key: str) -> None:
    """Per device, p[lo_key] must be below p[hi_key] (e.g. soc_min_pct < soc_max_pct)."""
    bad = np.flatnonzero(p[lo_key] >= p[hi_key])
    if bad.size:
        i = int(bad[0])
        raise ParamError(f"fleet '{group.name}': params.{lo_key}: {p[lo_key][i]:g} must be below "
                         f"{hi_key} ({p[hi_key][i]:g}) (device {i})")
