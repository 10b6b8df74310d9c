"""Load and PV forecasters (15-minute resolution, 1-3 days ahead).

Load: regression on calendar and temperature fitted by numpy least squares: one level per
(day type, quarter-hour) plus heating- and cooling-degree slopes per day type, so the daily
shape and the weather sensitivity are learned from history; or the similar-day method (mean
of the last k days of the same type at the same quarter-hour). PV: clear-sky irradiance
scaled by the forecast irradiance (or by yesterday's clear-sky index when no irradiance
forecast exists), times a kW-per-W/m2 factor learned from history by least squares.

History and weather are pandas DataFrames indexed by UTC timestamps at `step_s` spacing;
columns load_kw, pv_kw, t_out_c, ghi_w_m2 (forecasts use t_out_c and ghi_w_m2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from controller.forecasting.solar import clear_sky_ghi_w_m2

HEAT_BASE_C = 15.0
COOL_BASE_C = 22.0


def _epoch(index: pd.DatetimeIndex) -> np.ndarray:
    return (index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")).asi8 / 1e9


def _calendar(index: pd.DatetimeIndex, step_s: float, tz_offset_h: float):
    local = index + pd.Timedelta(hours=tz_offset_h)
    slot = ((local.hour * 3600 + local.minute * 60 + local.second) // int(step_s)).to_numpy()
    daytype = (local.dayofweek >= 5).astype(int)  # 0 weekday, 1 weekend
    return slot, np.asarray(daytype)


class LoadForecaster:
    def __init__(self, step_s: float = 900.0, method: str = "regression", k_days: int = 10,
                 tz_offset_h: float = 1.0):
        if method not in ("regression", "similar_day"):
            raise ValueError(f"LoadForecaster.method: {method!r} is not 'regression' or 'similar_day'")
        self.step_s, self.method, self.k, self.tz = step_s, method, k_days, tz_offset_h
        self.n_slots = round(86400 / step_s)

    def _design(self, index, t_out_c):
        slot, dt = _calendar(index, self.step_s, self.tz)
        n, ns = len(index), self.n_slots
        X = np.zeros((n, 2 * ns + 4))
        X[np.arange(n), dt * ns + slot] = 1.0
        hdd, cdd = np.maximum(HEAT_BASE_C - t_out_c, 0), np.maximum(t_out_c - COOL_BASE_C, 0)
        X[:, 2 * ns + 0] = hdd * (dt == 0)
        X[:, 2 * ns + 1] = hdd * (dt == 1)
        X[:, 2 * ns + 2] = cdd * (dt == 0)
        X[:, 2 * ns + 3] = cdd * (dt == 1)
        return X

    def fit(self, history: pd.DataFrame) -> LoadForecaster:
        self.history = history[["load_kw"]].copy()
        if self.method == "regression":
            X = self._design(history.index, history["t_out_c"].to_numpy(float))
            self.coef, *_ = np.linalg.lstsq(X, history["load_kw"].to_numpy(float), rcond=None)
        return self

    def forecast(self, weather: pd.DataFrame) -> np.ndarray:
        """Load (kW) at weather.index (needs t_out_c for the regression method)."""
        if self.method == "regression":
            return self._design(weather.index, weather["t_out_c"].to_numpy(float)) @ self.coef
        h = self.history
        slot_h, dt_h = _calendar(h.index, self.step_s, self.tz)
        day_h = (_epoch(h.index) // 86400).astype(int)
        slot, dt = _calendar(weather.index, self.step_s, self.tz)
        out = np.empty(len(weather))
        y = h["load_kw"].to_numpy(float)
        for d in (0, 1):
            days = np.unique(day_h[dt_h == d])[-self.k:]
            sel = (dt_h == d) & np.isin(day_h, days)
            prof = np.bincount(slot_h[sel], y[sel], self.n_slots) / np.maximum(
                np.bincount(slot_h[sel], None, self.n_slots), 1)
            out[dt == d] = prof[slot[dt == d]]
        return out


class PvForecaster:
    def __init__(self, lat_deg: float, lon_deg: float):
        self.lat, self.lon = lat_deg, lon_deg

    def fit(self, history: pd.DataFrame) -> PvForecaster:
        """Learn kW per W/m2 from measured PV against measured irradiance (least squares
        through the origin, daylight only)."""
        self.history = history
        ghi, pv = history["ghi_w_m2"].to_numpy(float), history["pv_kw"].to_numpy(float)
        day = ghi > 20
        self.kw_per_w_m2 = float(ghi[day] @ pv[day] / max(ghi[day] @ ghi[day], 1e-9))
        return self

    def forecast(self, weather: pd.DataFrame) -> np.ndarray:
        """PV (kW, >= 0, generation positive) at weather.index. With a ghi_w_m2 column
        (irradiance forecast) it is scaled directly; without, clear-sky irradiance is scaled
        by the clear-sky index of the last history day."""
        if "ghi_w_m2" in weather:
            ghi = weather["ghi_w_m2"].to_numpy(float)
        else:
            h = self.history.iloc[-int(86400 / 900):]
            cs_h = clear_sky_ghi_w_m2(_epoch(h.index), self.lat, self.lon)
            k = float(h["ghi_w_m2"].sum() / max(cs_h.sum(), 1e-9))
            ghi = k * clear_sky_ghi_w_m2(_epoch(weather.index), self.lat, self.lon)
        return np.maximum(self.kw_per_w_m2 * ghi, 0.0)


class Forecaster:
    """Load and PV together: `fit(history)` then `forecast(weather)` -> dict of arrays,
    'load_kw', 'pv_kw' and 'net_load_kw' (load - pv, the feeder head without dispatch)."""

    def __init__(self, lat_deg: float, lon_deg: float, step_s: float = 900.0,
                 load_method: str = "regression"):
        self.load = LoadForecaster(step_s, load_method)
        self.pv = PvForecaster(lat_deg, lon_deg)

    def fit(self, history: pd.DataFrame) -> Forecaster:
        self.load.fit(history)
        self.pv.fit(history)
        return self

    def forecast(self, weather: pd.DataFrame) -> dict[str, np.ndarray]:
        load, pv = self.load.forecast(weather), self.pv.forecast(weather)
        return {"load_kw": load, "pv_kw": pv, "net_load_kw": load - pv}
