"""A seeded 'simulated year' of feeder load, PV and weather at 15-minute resolution, for
evaluating forecasters on held-out days, plus noisy weather forecasts 1-3 days ahead.

Same ingredients as the twin (residential/commercial hourly shapes, Haurwitz clear sky), copied
here so the controller stays independent of twin; adds seasons, weekends, heating/cooling
load and day-to-day cloudiness.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from controller.forecasting.solar import clear_sky_ghi_w_m2

RESIDENTIAL = np.array([0.38, 0.33, 0.30, 0.29, 0.30, 0.36, 0.52, 0.66, 0.62, 0.55, 0.52, 0.53,
                        0.56, 0.53, 0.50, 0.52, 0.60, 0.78, 0.95, 1.00, 0.93, 0.80, 0.62, 0.46])
COMMERCIAL = np.array([0.30, 0.28, 0.28, 0.28, 0.30, 0.36, 0.50, 0.75, 0.92, 0.98, 1.00, 1.00,
                       0.96, 0.98, 1.00, 0.97, 0.90, 0.78, 0.60, 0.48, 0.40, 0.36, 0.33, 0.31])


def _shape(shape: np.ndarray, h: np.ndarray) -> np.ndarray:
    i = np.floor(h).astype(int) % 24
    f = h - np.floor(h)
    return shape[i] * (1 - f) + shape[(i + 1) % 24] * f


def simulated_year(seed: int = 0, start: str = "2025-01-01", days: int = 365, step_s: float = 900.0,
                   lat_deg: float = 48.0, lon_deg: float = 11.0, tz_offset_h: float = 1.0,
                   load_peak_kw: float = 400.0, pv_kwp: float = 300.0) -> pd.DataFrame:
    """DataFrame indexed by UTC time: t_out_c, ghi_w_m2, load_kw, pv_kw (generation > 0)."""
    rng = np.random.default_rng(seed)
    idx = pd.date_range(start, periods=int(days * 86400 / step_s), freq=f"{int(step_s)}s", tz="UTC")
    t = idx.asi8 / 1e9
    n_per_day = int(86400 / step_s)
    day = np.arange(len(idx)) // n_per_day
    doy = idx.dayofyear.to_numpy()
    local = idx + pd.Timedelta(hours=tz_offset_h)
    h = local.hour.to_numpy() + local.minute.to_numpy() / 60.0
    weekend = local.dayofweek.to_numpy() >= 5
    # temperature: season + AR(1) day anomaly + diurnal swing
    anom = np.zeros(days)
    for d in range(1, days):
        anom[d] = 0.7 * anom[d - 1] + 2.5 * rng.standard_normal()
    t_out = (10.0 - 10.0 * np.cos(2 * np.pi * (doy - 20) / 365.0) + anom[day]
             + 4.0 * np.cos(2 * np.pi * (h - 15.0) / 24.0))
    # irradiance: clear sky x daily clear-sky index x intra-day noise
    k_day = np.clip(rng.beta(4, 2, days), 0.1, 1.0)
    k = np.clip(k_day[day] * (1 + 0.08 * rng.standard_normal(len(idx))), 0.05, 1.1)
    ghi = clear_sky_ghi_w_m2(t, lat_deg, lon_deg) * k
    # load: 70 % residential + 30 % commercial (weekends: commercial at 40 %), heating/cooling
    res = _shape(RESIDENTIAL, h - weekend * 1.0)  # weekend mornings an hour later
    com = _shape(COMMERCIAL, h) * np.where(weekend, 0.4, 1.0)
    thermal = 0.012 * np.maximum(15.0 - t_out, 0) + 0.02 * np.maximum(t_out - 22.0, 0)
    noise = np.zeros(len(idx))
    e = rng.standard_normal(len(idx)) * 0.02
    for i in range(1, len(idx)):
        noise[i] = 0.9 * noise[i - 1] + e[i]
    load = load_peak_kw * (0.7 * res + 0.3 * com + thermal) * (1 + noise)
    t_cell = t_out + 0.03 * ghi
    pv = np.maximum(pv_kwp * ghi / 1000.0 * 0.85 * (1 - 0.004 * (t_cell - 25.0)), 0.0)
    return pd.DataFrame({"t_out_c": t_out, "ghi_w_m2": ghi, "load_kw": load, "pv_kw": pv}, index=idx)


def weather_forecast(truth: pd.DataFrame, issue_day_start: pd.Timestamp, days: int = 1,
                     seed: int = 0) -> pd.DataFrame:
    """Noisy forecast of t_out_c and ghi_w_m2 for `days` days from issue_day_start; errors grow
    with lead day (temperature bias ~1 K per lead day, irradiance ~10 % per lead day)."""
    rng = np.random.default_rng(seed)
    w = truth.loc[issue_day_start: issue_day_start + pd.Timedelta(days=days) - pd.Timedelta(seconds=1),
                  ["t_out_c", "ghi_w_m2"]].copy()
    lead = ((w.index - issue_day_start) // pd.Timedelta(days=1)).to_numpy() + 1
    n_per_day = round(len(w) / days)
    w["t_out_c"] += np.repeat(rng.normal(0, 1.0, days), n_per_day)[: len(w)] * lead
    w["ghi_w_m2"] *= np.clip(1 + np.repeat(rng.normal(0, 0.10, days), n_per_day)[: len(w)] * lead
                             + 0.05 * rng.standard_normal(len(w)), 0, None)
    return w
