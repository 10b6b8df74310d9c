"""Prometheus metrics of a running controller (`GET /metrics`, prometheus_client text format).

Cycle timings come from the historian's `cycles` rows (every cycle, none missed, whichever
thread scrapes); fleet, gate, DR and emergency figures from the API's snapshot of the
controller (controller.api.view), so a scrape never waits on the cycle. One registry per
app: no process-global state, two controllers in one process do not mix.
"""

from __future__ import annotations

import threading

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

PARTS = ("read", "estimate", "optimize", "dr", "gate", "write", "total")
BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
QUALITY = {0: "good", 1: "stale", 2: "invalid", 3: "missing", 4: "suspect"}
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def device_quality(available, in_service, quality: dict) -> list[str]:
    """Per device one word: out_of_service, unavailable, or the worst quality of its values
    (suspect > invalid > missing > stale > good)."""
    n = len(available) if available is not None else (len(next(iter(quality.values()))) if quality else 0)
    rank = {0: 0, 1: 1, 3: 2, 2: 3, 4: 4}
    out = []
    for j in range(n):
        if in_service is not None and not in_service[j]:
            out.append("out_of_service")
        elif available is not None and not available[j]:
            out.append("unavailable")
        else:
            codes = [int(q[j]) for q in quality.values()]
            out.append(QUALITY.get(max(codes, key=lambda c: rank.get(c, 5)), "unknown") if codes else "missing")
    return out


class _Snapshot(Collector):
    def __init__(self, view, hist):
        self.view, self.hist = view, hist

    def collect(self):
        s = self.view.get()
        dev = GaugeMetricFamily("gridtwin_devices", "Devices by group, kind and data quality",
                                labels=["group", "kind", "quality"])
        for group, kind, _ids, _usable, avail, insvc, _values, quality, _r in s.groups:
            words = device_quality(avail, insvc, quality)
            for w in sorted(set(words)):
                dev.add_metric([group, kind, w], words.count(w))
        yield dev
        gate = CounterMetricFamily("gridtwin_gate_decisions", "Safety gate verdicts since start",
                                   labels=["verdict"])
        for k in ("accepted", "curtailed", "rejected"):
            gate.add_metric([k], float(s.gate_totals.get(k, 0)))
        yield gate
        req = GaugeMetricFamily("gridtwin_dr_requested_kw", "Reduction requested by active DR events",
                                labels=["event"])
        dl = GaugeMetricFamily("gridtwin_dr_delivered_kw", "Metered reduction of active DR events "
                               "(mean over the event so far)", labels=["event"])
        for e in s.dr:
            if e.get("status") != "active":
                continue
            req.add_metric([e["id"]], float(e["reduction_kw"]))
            dl.add_metric([e["id"]], float(e.get("delivered_kw") or 0.0))
        yield req
        yield dl
        m = s.margin.get("margin_kw")
        g = GaugeMetricFamily("gridtwin_margin_kw", "Load-reduction margin available now")
        g.add_metric([], float(m) if m is not None else float("nan"))
        yield g
        g = GaugeMetricFamily("gridtwin_emergency_active", "1 while an emergency shed is in force")
        g.add_metric([], 1.0 if s.emergency else 0.0)
        yield g
        g = GaugeMetricFamily("gridtwin_cycle_number", "Cycles run (historian numbering)")
        g.add_metric([], float(s.n_cycle))
        yield g
        act = GaugeMetricFamily("gridtwin_alarms_active", "Active alarms by kind", labels=["kind"])
        tot = CounterMetricFamily("gridtwin_alarms_raised", "Alarms raised (historian rows)")
        counts = self.hist.alarm_counts()
        for kind, (active, _) in sorted(counts.items()):
            act.add_metric([kind], float(active))
        tot.add_metric([], float(sum(n for _, n in counts.values())))
        yield act
        yield tot


class ControllerMetrics:
    """The registry behind /metrics for one controller."""

    def __init__(self, view, hist):
        self.hist = hist
        self.registry = CollectorRegistry()
        self.cycle = Histogram("gridtwin_cycle_seconds", "Controller cycle time by part",
                               ["part"], buckets=BUCKETS_S, registry=self.registry)
        self.denied = Counter("gridtwin_api_denied", "API requests refused", ["code"],
                              registry=self.registry)
        self.registry.register(_Snapshot(view, hist))
        self._last_n = hist.last_cycle()  # cycles of earlier runs are not this process's
        self._lock = threading.Lock()

    def ingest(self) -> None:
        """Observe the cycles recorded since the last scrape."""
        with self._lock:
            rows = self.hist.cycles_after(self._last_n)
            for r in rows:
                for p in PARTS:
                    v = r.get(f"{p}_ms")
                    if v is not None and np.isfinite(v):
                        self.cycle.labels(p).observe(v / 1e3)
            if rows:
                self._last_n = rows[-1]["n"]

    def render(self) -> bytes:
        self.ingest()
        return generate_latest(self.registry)
