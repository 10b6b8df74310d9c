"""Weather for the twin: clear-sky irradiance with a seeded cloud process, or a CSV; wind
speed (synthetic around a mean, or the CSV's optional wind_speed_m_s column) and the power
curve that turns it into wind-generator output."""

from __future__ import annotations

import math

import numpy as np

from twin.csv_inputs import WEATHER_COLUMNS, read_series


def clear_sky_ghi_w_m2(t_utc_h: np.ndarray, day_of_year: np.ndarray, lat_deg: float,
                       lon_deg: float) -> np.ndarray:
    """Haurwitz clear-sky global horizontal irradiance from solar geometry (W/m2)."""
    decl = np.radians(23.45) * np.sin(2 * np.pi * (284 + day_of_year) / 365.0)
    solar_time_h = t_utc_h + lon_deg / 15.0
    hour_angle = np.radians(15.0 * (solar_time_h - 12.0))
    lat = math.radians(lat_deg)
    cos_z = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle)
    cos_z = np.clip(cos_z, 0.0, 1.0)
    with np.errstate(divide="ignore"):
        ghi = np.where(cos_z > 0.01, 1098.0 * cos_z * np.exp(-0.057 / np.maximum(cos_z, 0.01)), 0.0)
    return ghi


# A generic 2-3 MW class turbine: cut-in 3 m/s, rated at 12 m/s, cut-out 25 m/s.
CUT_IN_M_S, RATED_M_S, CUT_OUT_M_S = 3.0, 12.0, 25.0


def wind_power_pu(v_m_s):
    """Power curve: 0 below cut-in and from cut-out, cubic rise to 1 at rated speed."""
    v = np.asarray(v_m_s, dtype=float)
    rise = (v**3 - CUT_IN_M_S**3) / (RATED_M_S**3 - CUT_IN_M_S**3)
    return np.where((v < CUT_IN_M_S) | (v >= CUT_OUT_M_S), 0.0, np.clip(rise, 0.0, 1.0))


class Weather:
    """GHI and outdoor temperature at seconds since scenario start, precomputed per minute."""

    def __init__(self, spec, start, duration_s: float, seed: int, resolve):
        self.spec = spec
        n = int(math.ceil(duration_s / 60.0)) + 2
        self.t_s = np.arange(n) * 60.0
        if spec.kind == "csv":
            csv = read_series(resolve(spec.path), WEATHER_COLUMNS, start, duration_s, spec.extend)
            self.ghi = csv.sample("ghi_w_m2", self.t_s)
            self.t_out = csv.sample("t_out_c", self.t_s)
            self.wind = (csv.sample("wind_speed_m_s", self.t_s) if "wind_speed_m_s" in csv.values
                         else self._synthetic_wind(n, seed))
            return
        rng = np.random.default_rng(seed + 7919)
        t_utc_h = start.hour + start.minute / 60.0 + start.second / 3600.0 + self.t_s / 3600.0
        doy = start.timetuple().tm_yday + np.floor(t_utc_h / 24.0)
        clear = clear_sky_ghi_w_m2(t_utc_h % 24.0, doy, spec.latitude_deg, spec.longitude_deg)
        # Clear-sky index: AR(1) around a cloudiness-dependent mean, 1-minute steps.
        k = np.empty(n)
        mean = 1.0 - 0.75 * spec.cloudiness
        x = mean
        sd = 0.35 * spec.cloudiness
        for i in range(n):
            x = mean + 0.97 * (x - mean) + sd * math.sqrt(1 - 0.97**2) * rng.standard_normal()
            k[i] = x
        self.ghi = clear * np.clip(k, 0.05, 1.2)
        local_h = (t_utc_h + spec.longitude_deg / 15.0) % 24.0
        self.t_out = spec.t_out_mean_c + spec.t_out_swing_c * np.cos(2 * np.pi * (local_h - 15.0) / 24.0)
        self.wind = self._synthetic_wind(n, seed)

    def _synthetic_wind(self, n: int, seed: int) -> np.ndarray | None:
        """Hub-height wind speed (m/s) per minute: AR(1) around the scenario's mean with a
        ~3 h correlation time and a std of 35 % of the mean, never negative (own seed stream).
        None while the scenario names no wind (`weather.wind_mean_m_s`): wind generators then
        stay at the legacy fixed half rating."""
        mean = getattr(self.spec, "wind_mean_m_s", None)
        if mean is None:
            return None
        mean = float(mean)
        rng = np.random.default_rng(seed + 104729)
        a = math.exp(-1.0 / 180.0)
        sd = 0.35 * mean
        x = np.empty(n)
        v = mean + sd * rng.standard_normal()
        for i in range(n):
            v = mean + a * (v - mean) + sd * math.sqrt(1 - a * a) * rng.standard_normal()
            x[i] = v
        return np.maximum(x, 0.0)

    def wind_m_s(self, t_s: float) -> float:
        """Wind speed at t_s; NaN when the scenario has no wind source."""
        return float(np.interp(t_s, self.t_s, self.wind)) if self.wind is not None else math.nan

    def ghi_w_m2(self, t_s: float) -> float:
        return float(np.interp(t_s, self.t_s, self.ghi))

    def t_out_c(self, t_s: float) -> float:
        return float(np.interp(t_s, self.t_s, self.t_out))
