"""Telemetry-only kinds: the feeder-head revenue meter (p_kw, q_kvar: import +) and the
feeder RTU (bus voltages, branch loadings, tap positions). Nothing here is steered; the RTU's
tap commands are checked by the safety gate against the feeder model."""

from __future__ import annotations

from controller.kinds.base import Kind


class Meter(Kind):
    name = "meter"


class Rtu(Kind):
    name = "rtu"
