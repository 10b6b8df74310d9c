"""What the cycle's read step does after the links have answered: ratings of devices that were
(re)discovered (came up after the controller started, or answered again after a lost
connection) go into the group state, so their flexibility is used from that cycle on; then
the data-quality checks (controller/quality.py) mark what is not to be believed."""

from __future__ import annotations

import logging

import numpy as np

from controller.quality import DataQuality

log = logging.getLogger("controller.acquisition")


def apply_ratings(state, found: dict[str, dict[str, float]]) -> list[str]:
    """Write rediscovered ratings into GroupState.ratings; returns the devices whose ratings
    changed."""
    where = {d: (g, j) for g in state.groups.values() for j, d in enumerate(g.ids)}
    changed = []
    for dev, ratings in found.items():
        if dev not in where:
            continue
        g, j = where[dev]
        diff = False
        for name, v in ratings.items():
            arr = g.ratings.get(name)
            if arr is None:
                arr = g.ratings[name] = np.full(g.n, np.nan)
            v = float(v) if v is not None else np.nan
            if not (arr[j] == v or (np.isnan(arr[j]) and np.isnan(v))):
                arr[j] = v
                diff = True
        if diff:
            changed.append(dev)
    return changed


class Acquisition:
    def __init__(self, quality: DataQuality | None = None):
        self.quality = quality or DataQuality()
        self.on_discovered: list = []  # callables (t, [device ids]) after their ratings are in

    def after_read(self, t: float, state, links: dict, hist=None) -> None:
        seen = set()
        for link in links.values():
            if id(link) in seen:
                continue
            seen.add(id(link))
            found = link.take_rediscovered() if hasattr(link, "take_rediscovered") else {}
            if found:
                for dev in apply_ratings(state, found):
                    log.info("%s: ratings now %s", dev, found[dev])
                    if hist is not None:
                        hist.log_event(t, "device_discovered", device_id=dev, ratings=found[dev])
                for fn in self.on_discovered:  # e.g. reconcile a device that was down at start
                    fn(t, sorted(found))
        # the cycle's t is its scheduled slot (up to a period behind when it runs late); the
        # readings are stamped when they were taken: judge "from the future" against now
        now = max([t] + [link.clock.now() for link in links.values() if hasattr(link, "clock")])
        self.quality.apply(now, state, hist)
