"""Checked reading of the scenario's CSV inputs (weather, prices, base-load scale).

A CSV has a `time` column (ISO 8601; UTC unless an offset is given) and value columns whose
names carry their units. Every value must parse, be finite and lie in a physical range; the
times must increase and cover the run window unless the scenario says `extend: hold|cycle`.
Each mistake is one line naming the file, the line number and the column.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from scenarios.load import MAX_INPUT_BYTES, ScenarioError, clip, read_text_limited, show


@dataclass(frozen=True)
class Column:
    """A value column: name (with its unit), physical range, whether the file must have it."""

    name: str
    lo: float
    hi: float
    required: bool = True


WEATHER_COLUMNS = (Column("ghi_w_m2", 0.0, 1500.0), Column("t_out_c", -70.0, 60.0),
                   Column("wind_speed_m_s", 0.0, 75.0, required=False))
PRICE_COLUMNS = (Column("price_eur_per_mwh", -10_000.0, 100_000.0),)
BASE_LOAD_COLUMNS = (Column("scale", 0.0, 100.0),)


class CsvInputError(ScenarioError):
    """A CSV input the run cannot use; one line naming file, line and column."""


class Series:
    """Checked time series: seconds since the scenario start and one array per column,
    sampled by linear interpolation, held or cycled beyond the file's ends."""

    def __init__(self, t_s: np.ndarray, values: dict[str, np.ndarray], extend: str = "hold"):
        self.extend = extend
        if extend == "cycle" and len(t_s) >= 2:
            # close the loop: the first row again one (last) step after the last row
            period = t_s[-1] - t_s[0] + (t_s[-1] - t_s[-2])
            self._t0, self._period = t_s[0], period
            t_s = np.append(t_s, t_s[0] + period)
            values = {k: np.append(v, v[0]) for k, v in values.items()}
        else:
            self._period = None
        self.t_s, self.values = t_s, values

    def _map(self, t_s):
        if self._period is None:
            return t_s
        return self._t0 + np.mod(np.asarray(t_s, dtype=float) - self._t0, self._period)

    def at(self, column: str, t_s: float) -> float:
        return float(np.interp(self._map(t_s), self.t_s, self.values[column]))

    def sample(self, column: str, t_s: np.ndarray) -> np.ndarray:
        return np.interp(self._map(t_s), self.t_s, self.values[column])


def _line(i: int) -> int:
    return i + 2  # data row i sits on file line i+2 (line 1 is the header)


def read_series(path: str | Path, columns: tuple[Column, ...] | list, start, duration_s: float | None = None,
                extend: str = "hold") -> Series:
    """Read and check a CSV input; `duration_s` given and extend 'none': it must cover the run."""
    path = Path(path)
    cols = [c if isinstance(c, Column) else Column(c, -np.inf, np.inf) for c in columns]
    text = read_text_limited(path, "CSV file", MAX_INPUT_BYTES)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)  # ragged rows are errors, not dropped data
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True,
                             index_col=False)
    except pd.errors.EmptyDataError:
        raise CsvInputError(f"{path}: empty file; needs a header line: time,"
                            + ",".join(c.name for c in cols)) from None
    except (pd.errors.ParserError, pd.errors.ParserWarning, ValueError) as e:
        raise CsvInputError(f"{path}: not a readable CSV: {clip(e)}") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c.name for c in [Column("time", 0, 0), *cols] if c.required and c.name not in df.columns]
    if missing:
        raise CsvInputError(f"{path}: missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
                            f"(has {clip(', '.join(df.columns), 120)}); needs time,"
                            + ",".join(c.name for c in cols))
    if len(df) == 0:
        raise CsvInputError(f"{path}: no data rows (only a header)")
    if extend == "cycle" and len(df) < 2:
        raise CsvInputError(f"{path}: extend 'cycle' needs at least 2 rows")
    raw_t = df["time"].str.strip()
    t = pd.to_datetime(raw_t, utc=True, format="ISO8601", errors="coerce")
    bad = np.flatnonzero(t.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise CsvInputError(f"{path}: line {_line(i)}, column time: {show(raw_t.iloc[i])} is not an "
                            f"ISO 8601 time (e.g. 2026-06-21T10:00:00Z)")
    t_s = (t - pd.Timestamp(start)).dt.total_seconds().to_numpy()
    back = np.flatnonzero(np.diff(t_s) <= 0)
    if back.size:
        i = int(back[0]) + 1
        raise CsvInputError(f"{path}: line {_line(i)}, column time: {raw_t.iloc[i]} does not come after "
                            f"the previous row's {raw_t.iloc[i - 1]}; times must increase")
    values = {}
    for c in cols:
        if c.name not in df.columns:
            continue
        raw = df[c.name].str.strip()
        v = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(v) | (v < c.lo) | (v > c.hi))
        if bad.size:
            i = int(bad[0])
            what = ("is empty" if raw.iloc[i] == "" else f"{show(raw.iloc[i])} is not a finite number"
                    if not np.isfinite(v[i]) else f"{v[i]:g} is outside [{c.lo:g}, {c.hi:g}]")
            more = f" ({bad.size} bad rows)" if bad.size > 1 else ""
            raise CsvInputError(f"{path}: line {_line(i)}, column {c.name}: {what}{more}")
        values[c.name] = v
    if duration_s is not None and extend == "none":
        first, last = float(t_s[0]), float(t_s[-1])
        if first > 0 or last < duration_s:
            fmt = "%Y-%m-%d %H:%M"
            have = f"{t.iloc[0]:{fmt}} .. {t.iloc[-1]:{fmt}}"
            end = pd.Timestamp(start) + timedelta(seconds=duration_s)
            need = f"{pd.Timestamp(start):{fmt}} .. {end:{fmt}}"
            raise CsvInputError(f"{path}: covers {have} UTC but the run needs {need} UTC; extend the file "
                                f"or set extend: hold or extend: cycle")
    return Series(t_s, values, extend if extend != "none" else "hold")
