"""The cycle's field side: read every device link into the fleet's arrays, keep track of
which devices answer, write setpoints (only what changed beyond a deadband, or is due for a
refresh) and hand the historian its telemetry rows."""

from __future__ import annotations

import logging

import numpy as np

from controller.commands import Command
from controller.state import Q_NAME, fill_from_values

log = logging.getLogger("controller.cycle")


class FieldIO:
    def __init__(self, links: dict, state, hist, cfg, index: dict):
        self.links, self.state, self.hist, self.cfg, self._index = links, state, hist, cfg, index
        self.last_sent: dict[tuple[str, str], tuple[float, float]] = {}  # (value, t) per setpoint
        self._last_tel_t = -np.inf
        self.write_failures: dict[tuple[str, str], int] = {}  # consecutive failed writes per setpoint

    def read(self, t: float) -> None:
        """Every link once (one link may serve several groups) into the group arrays; a link
        that fails makes its devices unavailable and raises link_down."""
        done = set()
        for link in self.links.values():
            if id(link) in done:
                continue
            done.add(id(link))
            mine = [g for g, lk in self.links.items() if lk is link]
            try:
                if hasattr(link, "read_groups"):
                    data = link.read_groups()
                    for g in mine:
                        gs = self.state.groups[g]
                        gs.values, gs.quality, gs.available = data[g]
                        gs.t = np.full(gs.n, t)
                else:
                    readings, status = link.read(), link.status()
                    for g in mine:
                        fill_from_values(self.state.groups[g], readings, status)
            except Exception as e:  # the whole link failed: its devices are unavailable
                log.warning("read of %s failed: %s", mine, e)
                for g in mine:
                    gs = self.state.groups[g]
                    gs.available[:] = False
                    for q in gs.quality.values():
                        q[:] = 3
                    for v in gs.values.values():
                        v[:] = np.nan
                self.hist.raise_alarm(t, "link_down", ",".join(mine), str(e)[:300])

    def availability(self, t: float) -> int:
        """Availability bookkeeping (alarms, forgetting setpoints of lost devices); returns how
        many devices are unavailable."""
        n = 0
        for g in self.state.groups.values():
            down = ~g.available
            n += int(down.sum())
            prev = getattr(g, "_prev_avail", None)
            if prev is not None:
                for j in np.flatnonzero(prev & down):
                    self.hist.raise_alarm(t, "device_unavailable", g.ids[j], "device stopped answering")
                    for k in [k for k in self.last_sent if k[0] == g.ids[j]]:
                        del self.last_sent[k]
                for j in np.flatnonzero(~prev & g.available):
                    self.hist.clear_alarm("device_unavailable", g.ids[j])
                    self.hist.log_event(t, "device_back", device_id=g.ids[j])
            g._prev_avail = g.available.copy()
        return n

    def write(self, t: float, cmds: list[Command]) -> list[tuple]:
        """Send what changed (beyond the deadband) or is due for refresh; rows for the historian."""
        rows = []
        for c in cmds:
            k = (c.device_id, c.setpoint)
            last = self.last_sent.get(k)
            if (last is not None and abs(last[0] - c.value) < self.cfg.write_deadband
                    and t - last[1] < self.cfg.refresh_s):
                continue
            g, _ = self._index.get(c.device_id, (c.device_id.rpartition("/")[0], 0))
            link = self.links.get(g)
            ok = False
            if link is not None:
                try:
                    ok = bool(link.write(c.device_id, c.setpoint, c.value))
                except Exception as e:  # a write fault is reported, the cycle goes on
                    log.info("write %s.%s failed: %s", c.device_id, c.setpoint, e)
            if ok:
                self.last_sent[k] = (c.value, t)
                self.write_failures.pop(k, None)
            else:
                self.last_sent.pop(k, None)
                self.write_failures[k] = self.write_failures.get(k, 0) + 1
            rows.append((c.device_id, c.setpoint, c.value, c.source, int(ok)))
        return rows

    def telemetry_rows(self, t: float) -> list[tuple]:
        """Every cycle the feeder-head meter and RTU (a few values, the operator's head trend);
        every `telemetry_every_s` all devices (0: never)."""
        due = self.cfg.telemetry_every_s > 0 and t - self._last_tel_t >= self.cfg.telemetry_every_s - 1e-9
        if due:
            self._last_tel_t = t
        rows = []
        for g in self.state.groups.values():
            if not due and g.kind not in ("meter", "rtu"):
                continue
            for name, v in g.values.items():
                q = g.quality[name]
                for j, dev in enumerate(g.ids):
                    x = v[j]
                    rows.append((dev, name, None if not np.isfinite(x) else float(x), Q_NAME[int(q[j])]))
        return rows
