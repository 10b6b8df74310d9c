"""Feeder-head load forecast from the controller's own metering, for the rolling schedule.

The scheduler needs the head's net load without the batteries it is about to schedule (what
peak shaving shaves). Each optimisation observes head meter P minus the batteries' measured
P at that moment; the forecast for a time of day is the mean of the same quarter-hour over
the last `days` days seen, else the latest observation (persistence), else 0 kW. After a
restart the series can be seeded from the historian's head-meter telemetry (`seed`), and a
device group's profile (the scheduler's PV and flexible-load forecasts) from its devices'
telemetry (`seed_group`).
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import numpy as np

DAY_S = 86400.0
Q_S = 900.0  # UTC offsets change on quarter-hour boundaries (every zone in the tz database)


class HeadLoadForecast:
    """Quarter-hour-of-day means of the uncontrolled head load over the last `days` days, the
    time of day read on the site's local clock (`timezone`, IANA): loads follow the clock people
    live by, so after a daylight-saving change the evening peak stays in its slot."""

    def __init__(self, step_s: float = 900.0, days: int = 7, timezone: str = "UTC"):
        self.step_s = float(step_s)
        self.slots = round(DAY_S / self.step_s)
        self.samples: deque[tuple[float, float]] = deque(maxlen=days * self.slots * 4)
        self.days = days
        self.zone = None if timezone == "UTC" else ZoneInfo(timezone)
        self._offset: dict[int, float] = {}  # quarter hour (UTC) -> UTC offset s

    def _slot(self, t: np.ndarray) -> np.ndarray:
        """Slot of the local time of day of epoch seconds t."""
        if self.zone is not None:
            q = np.floor(t / Q_S).astype(np.int64)
            keys, inv = np.unique(q, return_inverse=True)
            for k in keys.tolist():
                if k not in self._offset:
                    dt = datetime.fromtimestamp(k * Q_S, UTC).astimezone(self.zone)
                    self._offset[k] = dt.utcoffset().total_seconds()
            t = t + np.array([self._offset[k] for k in keys.tolist()])[inv]
        return ((t % DAY_S) // self.step_s).astype(int)

    def observe(self, t: float, uncontrolled_kw: float) -> None:
        if np.isfinite(uncontrolled_kw) and (not self.samples or t > self.samples[-1][0]):
            self.samples.append((float(t), float(uncontrolled_kw)))

    def observe_state(self, t: float, state) -> bool:
        """Head meter P minus the batteries' P from a FleetState; False when the head is unknown."""
        meter = next((g for g in state.groups.values() if g.kind == "meter" and g.n), None)
        if meter is None:
            return False
        p = meter.get("p_kw")
        if not meter.usable().any() or not np.isfinite(p).any():
            return False
        head = float(np.nansum(p))
        bat = sum(float(np.nansum(g.get("p_kw"))) for g in state.groups.values()
                  if g.kind == "battery" and "p_kw" in g.values)
        self.observe(t, head - bat)
        return True

    def seed(self, hist, until: float, device_id: str) -> int:
        """Observations from the historian's head-meter rows (batteries not subtracted: a
        restart loses that split, the forecast is a little high where they were charging)."""
        rows = hist.good_values("p_kw", [device_id], until - self.days * DAY_S, until)
        for r in sorted(rows, key=lambda r: r["t"]):
            self.observe(r["t"], r["value"])
        return len(rows)

    def seed_group(self, hist, until: float, name: str, device_ids: list[str]) -> int:
        """Observations of a device group's total `name` (e.g. PV `p_avail_kw`) from the
        historian's device telemetry (recorded every `telemetry_every_s`): per instant the sum
        over the devices, kept where every device that ever reported did, one mean per slot
        (what the forecast averages per time of day)."""
        rows = hist.good_values(name, device_ids, until - self.days * DAY_S, until)
        if not rows:
            return 0
        t = np.array([r["t"] for r in rows], float)
        v = np.array([r["value"] for r in rows], float)
        inst, idx = np.unique(t, return_inverse=True)
        total = np.bincount(idx, v, len(inst))
        count = np.bincount(idx, minlength=len(inst))
        whole = count == count.max()
        keys, b_idx = np.unique(np.floor(inst[whole] / self.step_s), return_inverse=True)
        means = np.bincount(b_idx, total[whole]) / np.bincount(b_idx)
        for k, m in zip(keys, means):
            self.observe(k * self.step_s, m)
        return len(keys)

    def __call__(self, times) -> np.ndarray:
        times = np.asarray(times, float)
        if not self.samples:
            return np.zeros(times.shape)
        t, p = np.array(self.samples).T
        recent = t >= t[-1] - self.days * DAY_S
        t, p = t[recent], p[recent]
        slot = self._slot(t)
        total = np.bincount(slot, p, self.slots)
        count = np.bincount(slot, minlength=self.slots)
        mean = np.where(count > 0, total / np.maximum(count, 1), p[-1])
        return mean[self._slot(times)]
