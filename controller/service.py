"""The controller as a field service: links, historian, Controller and API from a config,
the cycle on its own thread (WallClock), uvicorn serving the API on loopback."""

from __future__ import annotations

import logging
import threading

from controller.clock import WallClock
from controller.config import ServiceConfig, load_tokens
from controller.core import Controller, CycleSettings
from controller.historian import Historian

log = logging.getLogger("controller.service")


def build_controller(cfg: ServiceConfig, clock=None) -> Controller:
    clock = clock or WallClock()
    links = {}
    rows = [r for g in cfg.devices if g.link == "modbus" for r in g.rows()]
    if rows:
        from controller.links.modbus import ModbusLink

        ls = cfg.link
        link = ModbusLink(rows, clock, timeout_s=ls.timeout_s, max_failures=ls.max_failures,
                          backoff_s=ls.backoff_s, backoff_max_s=ls.backoff_max_s)
        for g in cfg.devices:
            links[g.group] = link
    hs = cfg.historian
    hist = Historian(cfg.resolve(hs.path), hs.synchronous)
    scheduler = None
    if cfg.optimize_every_s > 0 and any(g.kind == "battery" for g in cfg.devices):
        from controller.scheduling import BatteryScheduler

        scheduler = BatteryScheduler(cfg.price_fn())
    settings = CycleSettings(cycle_s=cfg.cycle_s, optimize_every_s=cfg.optimize_every_s or 1e18,
                             telemetry_every_s=hs.telemetry_every_s)
    return Controller(links, clock, historian=hist, settings=settings, scheduler=scheduler)


def serve(cfg: ServiceConfig) -> int:
    import uvicorn

    from controller.api import create_app

    tokens = load_tokens(cfg)
    ctl = build_controller(cfg)
    stop = threading.Event()
    th = threading.Thread(target=ctl.run, args=(stop,), name="controller-cycle", daemon=True)
    th.start()
    app = create_app(ctl, tokens)
    log.info("controller %s: %d devices, API on http://%s:%d", cfg.name,
             ctl.state.device_count(), cfg.api.host, cfg.api.port)
    try:
        uvicorn.run(app, host=cfg.api.host, port=cfg.api.port, log_level="warning")
    finally:
        stop.set()
        th.join(10)
        for link in {id(l): l for l in ctl.links.values()}.values():
            link.close()
        ctl.hist.close()
    return 0
