"""Base-load shapes, time-of-use prices and CSV-backed profiles, on the scenario's local clock."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

from twin.csv_inputs import BASE_LOAD_COLUMNS, PRICE_COLUMNS, Column, read_series

# Hourly shapes, normalised to a peak of 1.0 (typical European residential / commercial days).
_SHAPES = {
    "residential": [0.38, 0.33, 0.30, 0.29, 0.30, 0.36, 0.52, 0.66, 0.62, 0.55, 0.52, 0.53,
                    0.56, 0.53, 0.50, 0.52, 0.60, 0.78, 0.95, 1.00, 0.93, 0.80, 0.62, 0.46],
    "commercial": [0.30, 0.28, 0.28, 0.28, 0.30, 0.36, 0.50, 0.75, 0.92, 0.98, 1.00, 1.00,
                   0.96, 0.98, 1.00, 0.97, 0.90, 0.78, 0.60, 0.48, 0.40, 0.36, 0.33, 0.31],
    "flat": [1.0] * 24,
}


def load_shape(profile: str, hour_of_day: float) -> float:
    """Shape value at a fractional hour, linearly interpolated between hourly points."""
    shape = _SHAPES[profile]
    h = hour_of_day % 24.0
    i = int(h)
    f = h - i
    return shape[i] * (1 - f) + shape[(i + 1) % 24] * f


def load_shapes(profile: str, hours_of_day: np.ndarray) -> np.ndarray:
    """`load_shape` at many hours, element by element the same arithmetic."""
    shape = np.asarray(_SHAPES[profile] + _SHAPES[profile][:1], float)
    h = np.asarray(hours_of_day, float) % 24.0
    i = h.astype(np.int64)
    f = h - i
    return shape[i] * (1 - f) + shape[i + 1] * f


class LocalClock:
    """Local clock time in an IANA zone at seconds since the scenario start. Load shapes, EV
    arrival hours and time-of-use periods are clock times people live by (DST included: a
    spring-forward day has 23 hours, a fall-back day 25), while sun and outdoor temperature
    follow solar time (twin.weather). The UTC offset is cached per quarter hour of UTC;
    a quarter hour that holds a transition is computed exactly every time."""

    Q_S = 900.0

    def __init__(self, start: datetime, timezone: str = "UTC"):
        self.timezone = timezone
        self.zone = ZoneInfo(timezone)
        self.t0 = start.timestamp()
        self._fixed = timezone == "UTC"
        self._q: dict[int, float | None] = {}

    def _exact(self, u: float) -> float:
        dt = datetime.fromtimestamp(u, UTC).astimezone(self.zone)
        return dt.utcoffset().total_seconds()

    def offset_s(self, t_s: float) -> float:
        """UTC offset (s) of the local clock at t_s."""
        if self._fixed:
            return 0.0
        u = self.t0 + t_s
        q = math.floor(u / self.Q_S)
        if q not in self._q:
            a, b = self._exact(q * self.Q_S), self._exact((q + 1) * self.Q_S - 1e-3)
            self._q[q] = a if a == b else None
        off = self._q[q]
        return self._exact(u) if off is None else off

    def hour(self, t_s: float) -> float:
        """Local clock hour of day (0 <= h < 24, fractional) at t_s."""
        return ((self.t0 + t_s + self.offset_s(t_s)) % 86400.0) / 3600.0

    def hours(self, t_s: np.ndarray) -> np.ndarray:
        """`hour` at many instants (a device batch): the same arithmetic, with the UTC offset
        looked up once per quarter hour the instants fall in."""
        t_s = np.asarray(t_s, float)
        off = np.zeros(t_s.shape)
        if not self._fixed:
            q = np.floor((self.t0 + t_s) / self.Q_S)
            for qv in np.unique(q):
                at = q == qv
                first = float(t_s[np.argmax(at)])
                self.offset_s(first)  # fills the quarter's cache entry
                o = self._q[int(qv)]
                off[at] = [self.offset_s(float(x)) for x in t_s[at]] if o is None else o
        return ((self.t0 + t_s + off) % 86400.0) / 3600.0


_KNOWN = {c.name: c for c in (*BASE_LOAD_COLUMNS, *PRICE_COLUMNS)}


class CsvProfile:
    """A time series from CSV (column `time` in ISO 8601 UTC plus value columns), checked by
    twin.csv_inputs and sampled by linear interpolation at seconds since the scenario start."""

    def __init__(self, path, start, columns: list, duration_s: float | None = None, extend: str = "hold"):
        cols = [c if isinstance(c, Column) else _KNOWN.get(c, c) for c in columns]
        self.series = read_series(path, cols, start, duration_s, extend)
        self.t_s, self.values = self.series.t_s, self.series.values

    def at(self, column: str, t_s: float) -> float:
        return self.series.at(column, t_s)


class Prices:
    """Energy price in EUR/MWh at a time: time-of-use periods (hours of the local clock in
    `timezone`, the scenario's) or a CSV column `price_eur_per_mwh` (absolute times)."""

    def __init__(self, spec, start, resolve, timezone: str = "UTC"):
        self.spec = spec
        self.start = start
        self.clock = LocalClock(start, timezone)
        self.csv = (CsvProfile(resolve(spec.path), start, list(PRICE_COLUMNS),
                               extend=getattr(spec, "extend", "hold"))
                    if spec.kind == "csv" else None)

    def at(self, t_s: float) -> float:
        if self.csv is not None:
            return self.csv.at("price_eur_per_mwh", t_s)
        h = self.clock.hour(t_s)
        for p in self.spec.periods:
            if p.start_h <= h < p.end_h:
                return p.price_eur_per_mwh
        return self.spec.base_eur_per_mwh

    def series(self, t0_s: float, step_s: float, n: int) -> np.ndarray:
        return np.array([self.at(t0_s + k * step_s) for k in range(n)])
