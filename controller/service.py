"""The controller as a field service: links, feeder model, safety gate, historian, Controller,
DR events and the OpenADR VEN from a config; the cycle on its own thread (WallClock), uvicorn
serving the API on loopback. The same wiring as hil/controller_adapter.py, from a config file
instead of a scenario."""

from __future__ import annotations

import logging
import os
import threading

from controller.clock import WallClock
from controller.config import ConfigError, ServiceConfig, load_tokens
from controller.core import Controller
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
    for i, rtu in enumerate(cfg.iec104):
        from controller.links.iec104 import Iec104Link, Iec104LinkError

        try:
            links[rtu.group] = Iec104Link.from_endpoints(
                [rtu.row(cfg.resolve)], clock, stale_s=rtu.stale_s, connect_timeout_s=rtu.connect_timeout_s,
                command_timeout_ms=int(rtu.command_timeout_s * 1000), backoff_max_s=cfg.link.backoff_max_s)
        except Iec104LinkError as e:
            raise ConfigError(f"{cfg._path}: iec104.{i}: {e}") from None
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
    """The service's controller: its links, historian and feeder model handed to
    controller.assembly.assemble with the config as the spec."""
    from controller.assembly import Spec, assemble

    clock = clock or WallClock()
    hs = cfg.historian
    return assemble(Spec.from_config(cfg), make_links(cfg, clock), clock,
                    Historian(cfg.resolve(hs.path), hs.synchronous), feeder_model(cfg),
                    cfg.feeder.limits if cfg.feeder is not None else None, cfg.price_fn())


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
    from controller.api.serving import check_secret, say_tokens, uvicorn_options
    from controller.historian import InstanceLock, InstanceLockError

    tokens = load_tokens(cfg)
    say_tokens(tokens)
    web = uvicorn_options(cfg.api, cfg.resolve)  # non-loopback needs TLS (issue 17)
    if cfg.openadr:
        openadr_client_options(cfg)  # its config errors before anything starts
        if cfg.openadr.key_file:
            check_secret(cfg.resolve(cfg.openadr.key_file), "openadr.key_file")
    try:  # one service per state directory: a second one is refused before it touches anything
        instance = InstanceLock(cfg.resolve(cfg.historian.path))
    except InstanceLockError as e:
        raise ConfigError(str(e)) from None
    ctl = build_controller(cfg)
    stop = threading.Event()
    th = threading.Thread(target=ctl.run, args=(stop,), name="controller-cycle", daemon=True)
    th.start()
    ven = start_openadr(cfg, ctl)
    app = create_app(ctl, tokens, cfg.api)
    log.info("controller %s: %d devices, gate %s, API on http%s://%s:%d%s", cfg.name,
             ctl.state.device_count(), ctl.gate_name(), "s" if "ssl_certfile" in web else "",
             cfg.api.host, cfg.api.port, f", OpenADR VEN -> {cfg.openadr.vtn_url}" if ven else "")
    try:
        uvicorn.run(app, **web, log_level="warning")
    finally:
        stop.set()
        if ven is not None:
            ven.stop()
        th.join(10)
        for link in {id(l): l for l in ctl.links.values()}.values():
            link.close()
        ctl.hist.close()
        instance.release()
    return 0
