"""Load and PV forecasting at 15-minute resolution, 1-3 days ahead, with accuracy metrics.
See controller/forecasting/README.md."""

from controller.forecasting.forecaster import Forecaster, LoadForecaster, PvForecaster
from controller.forecasting.metrics import mape, nrmse

__all__ = ["Forecaster", "LoadForecaster", "PvForecaster", "mape", "nrmse"]
