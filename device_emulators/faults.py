"""Fault injection on emulated devices: scheduled from the scenario or toggled at run time.

Kinds: latency (value = seconds before each answer), drop (requests never answered: the
client times out), exception (value = Modbus exception code, default 4), freeze (registers
stop refreshing: stale values), wrong_scale (value = scale-factor error in decades),
refuse (port closed: connection refused), reset (connections dropped once, port reopened),
iec104_link_loss (RTU stops), iec104_invalid (RTU points carry the IV quality bit).
Targets: a fleet group name (all its devices), "group:index", "meter", or "rtu".
Every start and end is logged to the twin's events (fault_start / fault_end).
"""

from __future__ import annotations

import asyncio

MODBUS_KINDS = {"latency", "drop", "exception", "freeze", "wrong_scale", "refuse", "reset"}


def _devices(host, target: str):
    if ":" in target:
        group, idx = target.split(":", 1)
        ids = [f"{group}/{int(idx)}"]
    elif target == "meter":
        ids = ["meter/head"]
    else:
        ids = [d for d in host.devices if d.startswith(target + "/")]
    missing = [i for i in ids if i not in host.devices]
    if missing or not ids:
        raise ValueError(f"fault target {target!r}: no emulated device {missing[0] if missing else target}")
    return [host.devices[i] for i in ids]


def _set(host, kind: str, target: str, value, on: bool) -> None:
    if kind in ("iec104_link_loss", "iec104_invalid"):
        if host.rtu is None:
            raise ValueError(f"fault {kind}: no RTU in this emulator host")
        if kind == "iec104_invalid":
            host.rtu.set_invalid(on)
        elif on:
            host.rtu.stop()
        else:
            host.rtu.start()
        return
    if kind not in MODBUS_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}")
    devs = _devices(host, target)
    if kind in ("refuse", "reset"):
        eps = {id(host.endpoint_of(d.device_id)): host.endpoint_of(d.device_id) for d in devs}
        for ep in eps.values():
            coro = (ep.stop() if on else ep.start()) if kind == "refuse" else (ep.reset() if on else None)
            if coro is not None:  # fire and forget: the loop may be waiting for the twin lock
                asyncio.run_coroutine_threadsafe(coro, host._loop)
        return
    for d in devs:
        if kind == "latency":
            d.latency_s = float(value or 1.0) if on else 0.0
        elif kind == "drop":
            d.drop = on
        elif kind == "exception":
            d.exception_code = int(value or 4) if on else 0
        elif kind == "freeze":
            d.frozen = on
        elif kind == "wrong_scale":
            d.sf_error = int(value or 1) if on else 0


def inject(host, kind: str, target: str, value=None, source: str = "scenario") -> dict:
    """Start a fault now (run-time toggle); returns the event logged."""
    _set(host, kind, target, value, True)
    host.active_faults[(kind, target)] = value
    return host.twin.events.log(host.twin.t_s, "fault_start", fault=kind, target=target, value=value,
                                source=source)


def clear(host, kind: str, target: str, source: str = "scenario") -> dict:
    _set(host, kind, target, None, False)
    host.active_faults.pop((kind, target), None)
    return host.twin.events.log(host.twin.t_s, "fault_end", fault=kind, target=target, source=source)


def schedule_faults(host) -> None:
    """SimPy processes that start and end each scenario fault at twin time."""
    env = host.twin.env
    for f in host.twin.scenario.faults:
        def proc(f=f):
            if f.at_s > env.now:
                yield env.timeout(f.at_s - env.now)
            inject(host, f.kind, f.target, f.value)
            yield env.timeout(f.duration_s)
            if f.kind != "reset":
                clear(host, f.kind, f.target)
        env.process(proc())
