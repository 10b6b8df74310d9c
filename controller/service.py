"""The controller as a field service: links, feeder model, safety gate, historian, Controller,
DR events and the OpenADR VEN from a config; the cycle on its own thread (WallClock), uvicorn
serving the API on loopback. The same wiring as hil/controller_adapter.py, from a config file
instead of a scenario."""

from __future__ import annotations

import logging
import os
import threading
from datetime import UTC

from controller.clock import WallClock
from controller.config import ConfigError, ServiceConfig, load_tokens
from controller.core import Controller, CycleSettings
from controller.historian import Historian

log = logging.getLogger("controller.service")


def make_links(cfg: ServiceConfig, clock) -> dict:
    """{group: DeviceLink}: one ModbusLink for every Modbus group, one Iec104Link per RTU."""
    links = {}
    rows = [r for g in cfg.devices for r in g.rows(cfg.resolve)]
    if rows:
        from controller.links.modbus import ModbusLink, ModbusLinkError

        ls = cfg.link
        try:
            link = ModbusLink(rows, clock, timeout_s=ls.timeout_s, max_failures=ls.max_failures,
                              backoff_s=ls.backoff_s, backoff_max_s=ls.backoff_max_s)
        except ModbusLinkError as e:
            raise ConfigError(f"{cfg._path}: devices: {e}") from None
        for g in cfg.devices:
            links[g.group] = link
    for rtu in cfg.iec104:
        from controller.links.iec104 import Iec104Link

        links[rtu.group] = Iec104Link.from_endpoints([rtu.row()], clock, stale_s=rtu.stale_s,
                                                     connect_timeout_s=rtu.connect_timeout_s,
                                                     backoff_max_s=cfg.link.backoff_max_s)
    return links


def feeder_model(cfg: ServiceConfig):
    """The controller's network model from the config's feeder section (None without one)."""
    fd = cfg.feeder
    if fd is None:
        return None
    from grid_models.feeders import FeederError, build_feeder

    try:
        net = build_feeder(fd.kind, fd.code, cfg.resolve(fd.path) if fd.path else None, fd.with_der)
    except FeederError as e:
        raise ConfigError(f"{cfg._path}: feeder: {e}") from None
    for i, g in enumerate(cfg.devices):
        bad = [b for b in (g.buses or [g.bus]) if b is not None and b not in net.bus.index]
        if bad:
            raise ConfigError(f"{cfg._path}: devices.{i}.buses: bus {bad[0]} is not in the {fd.kind} feeder model "
                              f"(buses {int(net.bus.index.min())}..{int(net.bus.index.max())})")
    if fd.base_load_scale != 1.0:
        net.load["p_mw"] *= fd.base_load_scale
        net.load["q_mvar"] *= fd.base_load_scale
    return net


def build_controller(cfg: ServiceConfig, clock=None) -> Controller:
    clock = clock or WallClock()
    links = make_links(cfg, clock)
    hs = cfg.historian
    hist = Historian(cfg.resolve(hs.path), hs.synchronous)
    scheduler = None
    if cfg.optimize_every_s > 0 and any(g.kind == "battery" for g in cfg.devices):
        from controller.forecasting.head import HeadLoadForecast
        from controller.scheduling import BatteryScheduler

        forecast = HeadLoadForecast()  # learnt from the head meter; refilled from the historian
        meter = next((r["device_id"] for g in cfg.devices if g.kind == "meter" for r in g.rows()), None)
        if meter is not None:
            forecast.seed(hist, clock.now(), meter)
        scheduler = BatteryScheduler(cfg.price_fn(), objective=cfg.objective, head_forecast=forecast)
    net = feeder_model(cfg)
    gate = snapshot_fn = None
    if cfg.safety_gate:
        from controller.safety.base_load import make_gate

        gate, snapshot_fn = make_gate(net, cfg.feeder.limits, clock)
    settings = CycleSettings(cycle_s=cfg.cycle_s, optimize_every_s=cfg.optimize_every_s or 1e18,
                             telemetry_every_s=hs.telemetry_every_s)
    ctl = Controller(links, clock, historian=hist, gate=gate, settings=settings, scheduler=scheduler,
                     snapshot_fn=snapshot_fn)
    ctl.feeder_net = net
    ctl.feeder_limits = cfg.feeder.limits if cfg.feeder is not None else None
    known = {r["id"] for r in hist.dr_events()}
    for ev in cfg.dr_events:
        if ev.id in known:
            continue  # already taken (or finished) in an earlier run of this service
        start = ev.start if ev.start.tzinfo else ev.start.replace(tzinfo=UTC)
        ctl.add_dr_event(ev.id, start.timestamp(), ev.duration_s, ev.reduction_kw, ev.groups,
                         source="config")
        hist.log_event(clock.now(), "dr_event_from_config", event_id=ev.id)
    return ctl


def openadr_client_options(cfg: ServiceConfig) -> dict:
    """OpenADRClient keyword arguments for certificates and keys: file paths from the config,
    secrets (passphrase, VTN fingerprint) from the environment variables it names."""
    oa = cfg.openadr
    out = {}
    for key, arg in (("cert_file", "cert"), ("key_file", "key"), ("ca_file", "ca_file")):
        f = getattr(oa, key)
        if f:
            out[arg] = str(cfg.resolve(f))
    for key, arg in (("passphrase_env", "passphrase"), ("vtn_fingerprint_env", "vtn_fingerprint")):
        var = getattr(oa, key)
        if var:
            if var not in os.environ:
                raise ConfigError(f"{cfg._path}: openadr.{key}: environment variable {var} is not set")
            out[arg] = os.environ[var]
    return out


def start_openadr(cfg: ServiceConfig, ctl: Controller):
    """The VEN bridge (supervised; never blocks or stops the cycle), or None."""
    oa = cfg.openadr
    if oa is None:
        return None
    from controller.dr.ven_bridge import VenBridge

    return VenBridge(ctl, oa.vtn_url, ven_name=oa.ven_name, ven_id=oa.ven_id, poll_s=oa.poll_s,
                     retry_s=oa.retry_s, down_after_s=oa.down_after_s,
                     start_timeout_s=oa.start_timeout_s, contracted_kw=oa.contracted_kw,
                     report_sampling_s=oa.report_sampling_s,
                     client_options=openadr_client_options(cfg)).start()


def serve(cfg: ServiceConfig) -> int:
    import uvicorn

    from controller.api import create_app

    tokens = load_tokens(cfg)
    if cfg.openadr:
        openadr_client_options(cfg)  # its config errors before anything starts
    ctl = build_controller(cfg)
    stop = threading.Event()
    th = threading.Thread(target=ctl.run, args=(stop,), name="controller-cycle", daemon=True)
    th.start()
    ven = start_openadr(cfg, ctl)
    app = create_app(ctl, tokens)
    log.info("controller %s: %d devices, gate %s, API on http://%s:%d%s", cfg.name,
             ctl.state.device_count(), ctl.gate_name(), cfg.api.host, cfg.api.port,
             f", OpenADR VEN -> {cfg.openadr.vtn_url}" if ven else "")
    try:
        uvicorn.run(app, host=cfg.api.host, port=cfg.api.port, log_level="warning")
    finally:
        stop.set()
        if ven is not None:
            ven.stop()
        th.join(10)
        for link in {id(l): l for l in ctl.links.values()}.values():
            link.close()
        ctl.hist.close()
    return 0
