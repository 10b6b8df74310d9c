"""`gridtwin hil init FILE --port-base P`: a working controller config and a 0600 tokens file
for the devices `gridtwin emulate FILE --port-base P` serves, so the live stack needs no
hand edits.

It lives in hil (which may see both sides) because the device layout comes from the twin:
fleet order, one port per device (or per gateway), then the head meter, then the IEC 104
RTU; the buses from the twin's placement. The controller package never imports the twin.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import yaml

ROLES = ("viewer", "operator", "admin")


def live_layout(scenario_path: str | Path, port_base: int) -> tuple[list[dict], dict, object]:
    """(device groups as controller config rows, iec104 RTU row, scenario) exactly as the
    emulator of this scenario assigns them from `port_base` (built, never started)."""
    from device_emulators.host import EmulatorHost
    from scenarios.load import load_scenario
    from twin.simulation import Twin

    sc = load_scenario(scenario_path)
    twin = Twin(sc)
    host = EmulatorHost(twin, port_base=port_base)
    groups: dict[str, dict] = {}
    for ep in host._modbus:
        for d in ep.devices:
            g = d.device_id.split("/")[0]
            kind = "meter" if d.kind == "meter" else d.kind
            name = "meter" if kind == "meter" else g
            row = groups.setdefault(name, {"group": name, "kind": kind, "ports": [], "units": [], "buses": []})
            row["ports"].append(int(ep.port))
            row["units"].append(int(getattr(d, "unit", 1)))
            bus = int(twin.net.ext_grid.bus.iloc[0]) if kind == "meter" else int(twin.fleets[g].bus[d.index])
            row["buses"].append(bus)
    out = []
    for row in groups.values():
        ports = row["ports"]
        if len(set(ports)) == len(ports) and ports == list(range(ports[0], ports[0] + len(ports))) \
                and set(row["units"]) == {1}:
            r = {"group": row["group"], "kind": row["kind"], "first_port": ports[0], "count": len(ports)}
        elif len(set(ports)) == 1:
            r = {"group": row["group"], "kind": row["kind"], "port": ports[0], "units": row["units"]}
        else:
            r = {"group": row["group"], "kind": row["kind"], "ports": ports, "units": row["units"]}
        r["buses"] = row["buses"]
        out.append(r)
    rtu_port = port_base + len({ep.port for ep in host._modbus})
    return out, {"group": "rtu", "port": rtu_port, "common_address": 1, "sbo": True, "stale_s": 60}, sc


def write_live_config(scenario_path: str | Path, port_base: int, out_dir: str | Path, api_port: int = 8080,
                      users: tuple[tuple[str, str], ...] = (("operator", "operator"), ("viewer", "viewer")),
                      force: bool = False) -> tuple[Path, Path, dict[str, str]]:
    """Write `controller.yaml` and `tokens.yaml` (mode 0600) into `out_dir`; return their paths
    and {user: token}. Refuses to overwrite unless `force`."""
    out = Path(out_dir)
    cfg_path, tok_path = out / "controller.yaml", out / "tokens.yaml"
    for p in (cfg_path, tok_path):
        if p.exists() and not force:
            raise FileExistsError(f"{p} exists (give --force to overwrite)")
    devices, rtu, sc = live_layout(scenario_path, port_base)
    fd = sc.feeder
    feeder = {"kind": fd.kind, "limits": fd.limits.model_dump(), "safety_gate": True}
    if getattr(fd, "code", None):
        feeder["code"] = fd.code
    if getattr(fd, "path", None):
        feeder["path"] = str(Path(fd.path).resolve())
    cfg = {"name": f"{sc.name}-live", "cycle_s": 2, "optimize_every_s": 0, "devices": devices,
           "iec104": [rtu], "feeder": feeder,
           "link": {"timeout_s": 0.5, "max_failures": 2, "backoff_s": 1, "backoff_max_s": 30},
           "historian": {"path": "historian.sqlite", "synchronous": "FULL", "telemetry_every_s": 10},
           "api": {"host": "127.0.0.1", "port": api_port, "tokens_file": "tokens.yaml"}}
    tokens = {user: secrets.token_urlsafe(24) for user, _ in users}
    out.mkdir(parents=True, exist_ok=True)
    header = (f"# written by `gridtwin hil init {scenario_path} --port-base {port_base}`: the controller\n"
              f"# against `gridtwin emulate {scenario_path} --port-base {port_base}`. Paths are relative to\n"
              f"# this file. Run: gridtwin controller serve --config {cfg_path}\n")
    tmp = cfg_path.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(cfg, sort_keys=False, default_flow_style=None, width=110))
    os.replace(tmp, cfg_path)
    body = ("# API bearer tokens: {token: {user: NAME, role: viewer|operator|admin}}. Keep this file\n"
            "# mode 0600; the controller refuses it otherwise. Users sign into the dashboard with\n"
            "# their user name and token.\n"
            + yaml.safe_dump({tok: {"user": user, "role": role} for (user, role), tok in
                              zip(users, tokens.values())}, sort_keys=False))
    fdesc = os.open(tok_path.with_suffix(".tmp"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fdesc, "w") as f:
        f.write(body)
    os.replace(tok_path.with_suffix(".tmp"), tok_path)
    return cfg_path, tok_path, tokens
