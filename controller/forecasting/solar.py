"""Solar geometry for PV forecasts: Haurwitz clear-sky irradiance (same math as the twin's
weather model, copied so the controller does not import twin)."""

from __future__ import annotations

import math

import numpy as np


def clear_sky_ghi_w_m2(t_epoch_s, lat_deg: float, lon_deg: float) -> np.ndarray:
    """Clear-sky global horizontal irradiance (W/m2) at UTC epoch seconds."""
    t = np.asarray(t_epoch_s, float)
    d = t.astype("int64").astype("datetime64[s]")
    doy = (d.astype("datetime64[D]") - d.astype("datetime64[Y]")).astype(int) + 1
    t_utc_h = (t % 86400.0) / 3600.0
    decl = np.radians(23.45) * np.sin(2 * np.pi * (284 + doy) / 365.0)
    hour_angle = np.radians(15.0 * (t_utc_h + lon_deg / 15.0 - 12.0))
    lat = math.radians(lat_deg)
    cos_z = np.clip(np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(hour_angle), 0, 1)
    return np.where(cos_z > 0.01, 1098.0 * cos_z * np.exp(-0.057 / np.maximum(cos_z, 0.01)), 0.0)
