"""Service config (`gridtwin controller serve --config`): every device kind the links speak,
the IEC 104 RTU, the feeder model, DR events, OpenADR; one-line errors naming file, key and
value; the shipped example matches what `gridtwin emulate --port-base` serves."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.config import ConfigError, load_config

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "controller/examples/field.yaml"

BASE = {"devices": [{"group": "bat", "kind": "battery", "ports": [1502]}]}


def write(tmp_path, cfg, name="svc.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg))
    return p


def test_example_config_matches_the_emulators_port_layout():
    from device_emulators import EmulatorHost
    from scenarios.load import load_scenario
    from twin.simulation import Twin

    cfg = load_config(EXAMPLE)
    twin = Twin(load_scenario(ROOT / "controller/examples/field_twin.yaml"))
    host = EmulatorHost(twin, port_base=15100)  # assigns ports without binding them
    served = {(e.group, e.kind, e.port, e.unit, e.bus) for e in host.endpoints}
    configured = {(r["group"], r["kind"], r["port"], r["unit"], r["bus"]) for g in cfg.devices
                  for r in g.rows()}
    # the emulator names the head meter meter/head; the controller calls it meter/0
    assert configured == served
    n_ports = len({e.port for e in host.endpoints})
    assert [(r.port, r.common_address) for r in cfg.iec104] == [(15100 + n_ports, 1)]  # RTU comes last
    kinds = {g.kind for g in cfg.devices}
    assert kinds == {"pv", "battery", "ev", "flex_load", "tcl", "meter"}
    assert cfg.safety_gate and cfg.feeder.kind == "cigre_lv" and cfg.feeder.limits.v_min_pu == 0.92


def test_endpoint_forms_give_rows(tmp_path):
    (tmp_path / "m.yaml").write_text("kind: flex_load\nregisters: []\n")
    cfg = load_config(write(tmp_path, {"devices": [
        {"group": "ev", "kind": "ev", "port": 1502, "units": [1, 2, 3]},
        {"group": "flex", "kind": "flex_load", "first_port": 1600, "count": 2, "map_file": "m.yaml"},
    ], "iec104": [{"port": 2404, "common_address": 7, "sbo": False, "stale_s": 30}]}))
    rows = [r for g in cfg.devices for r in g.rows(cfg.resolve)]
    assert [(r["device_id"], r["port"], r["unit"]) for r in rows] == [
        ("ev/0", 1502, 1), ("ev/1", 1502, 2), ("ev/2", 1502, 3), ("flex/0", 1600, 1), ("flex/1", 1601, 1)]
    assert rows[3]["map_file"] == str(tmp_path / "m.yaml")
    assert cfg.iec104[0].row() == {"device_id": "rtu", "group": "rtu", "host": "127.0.0.1",
                                   "port": 2404, "unit": 7, "sbo": False}
    assert not cfg.safety_gate  # no feeder, no gate


@pytest.mark.parametrize("patch, where", [
    ({"devices": [{"group": "bat", "kind": "battery", "prots": [1502]}]}, "devices.0.prots"),
    ({"devices": [{"group": "bat", "kind": "heatpump", "ports": [1502]}]}, "devices.0.kind"),
    ({"devices": [{"group": "bat", "kind": "battery", "ports": [1502], "first_port": 9, "count": 2}]},
     "devices.0: give exactly one of ports"),
    ({"devices": [{"group": "pv", "kind": "pv", "ports": [1502], "map_file": "x.yaml"}]},
     "devices.0: map_file is for plain-map kinds"),
    ({"iec104": [{"port": 99999}]}, "iec104.0.port"),
    ({"feeder": {"kind": "simbench"}}, "feeder: kind 'simbench' needs 'code'"),
    ({"feeder": {"kind": "cigre_lv"}}, "devices.0: group 'bat' needs buses"),
    ({"devices": [{"group": "bat", "kind": "battery", "ports": [1, 2], "buses": [3]}]},
     "devices.0: buses has 1 entries for 2 devices"),
    ({"feeder": {"kind": "cigre_lv", "limits": {"v_min_pu": 1.1, "v_max_pu": 1.0}}}, "feeder.limits"),
    ({"dr_events": [{"id": "a", "start": "2026-11-23T10:00:00Z", "duration_s": 600,
                     "reduction_kw": 10, "groups": ["nope"]}]}, "dr_events.0.groups: unknown device group 'nope'"),
    ({"dr_events": [{"id": "a", "start": "2026-11-23T10:00:00Z", "duration_s": 600,
                     "reduction_kw": -5}]}, "dr_events.0.reduction_kw"),
    ({"openadr": {"vtn_url": "127.0.0.1:8080"}}, "openadr.vtn_url"),
    ({"openadr": {"vtn_url": "http://127.0.0.1:8080/x", "cert_file": "nope.crt", "key_file": "k"}},
     "openadr.cert_file"),
    ({"openadr": {"vtn_url": "http://127.0.0.1:8080/x", "key": "-----BEGIN"}}, "openadr.key"),
    ({"timezone": "Europe/Berlinn"}, "timezone: unknown IANA time zone"),
])
def test_bad_config_is_one_line_naming_file_and_key(tmp_path, patch, where):
    p = write(tmp_path, {**BASE, **patch})
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{p}: ") and where in msg, msg


def test_cli_bad_key_exits_2_with_one_line(tmp_path):
    p = write(tmp_path, {**BASE, "cylce_s": 2})
    # the console script (python -m gridtwin_cli would make its UserError a second class)
    exe = str(Path(sys.executable).parent / "gridtwin")
    r = subprocess.run([exe, "controller", "serve", "--config", str(p)],
                       check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(p) in lines[0] and "cylce_s" in lines[0], r.stderr


def test_build_controller_wires_feeder_gate_and_config_events(tmp_path):
    from controller.clock import SteppedClock
    from controller.service import build_controller

    cfg_dict = {"devices": [{"group": "bat", "kind": "battery", "first_port": 1, "count": 2,
                             "buses": [3, 4]}],  # nothing listens: links connect lazily
                "feeder": {"kind": "cigre_lv", "base_load_scale": 0.5},
                "dr_events": [{"id": "peak", "start": "2026-11-23T17:00:00Z", "duration_s": 900,
                               "reduction_kw": 5, "groups": ["bat"]}],
                "historian": {"path": "h.sqlite", "synchronous": "NORMAL"}}
    cfg = load_config(write(tmp_path, cfg_dict))
    ctl = build_controller(cfg, SteppedClock(1.79e9))
    try:
        assert ctl.gate_name() == "SafetyGate" and ctl.feeder_limits.v_max_pu == 1.05
        from grid_models.feeders import build_feeder

        full = build_feeder("cigre_lv").load.p_mw.sum()
        assert ctl.feeder_net.load.p_mw.sum() == pytest.approx(0.5 * full)
        ev = ctl.dr["peak"]
        assert (ev.source, ev.reduction_kw, ev.groups, ev.start_t) == ("config", 5.0, ["bat"], 1795453200.0)
        assert list(ctl.state.groups["bat"].bus) == [3, 4]
    finally:
        ctl.links["bat"].close()
        ctl.hist.close()
    # restarted: the event is resumed from the historian, not added twice
    ctl = build_controller(load_config(tmp_path / "svc.yaml"), SteppedClock(1.79e9))
    assert [r["id"] for r in ctl.hist.dr_events()] == ["peak"] and ctl.dr["peak"].status == "pending"
    ctl.hist.close()
    # a bus the feeder model does not have is a config error naming file and key
    cfg_dict["devices"][0]["buses"] = [3, 999]
    with pytest.raises(ConfigError, match=r"svc2\.yaml: devices\.0\.buses: bus 999 is not in the cigre_lv"):
        build_controller(load_config(write(tmp_path, cfg_dict, "svc2.yaml")), SteppedClock(1.79e9))


def test_peak_objective_schedules_against_the_head_forecast_seeded_from_the_historian(tmp_path):
    """A restarted service refills its head-load forecast from the historian's head meter rows
    and its battery scheduler plans the feeder head against it."""
    from controller.clock import SteppedClock
    from controller.historian import Historian
    from controller.service import build_controller

    t0 = 1_795_392_000.0  # 2026-11-23 00:00 UTC
    hist = Historian(tmp_path / "h.sqlite", "NORMAL")
    for n in range(96):  # yesterday: 100 kW, 200 kW from 18:00 to 20:00
        t = t0 - 86400.0 + 900.0 * n
        hist.record_cycle(n + 1, t, {}, [("head/0", "p_kw", 200.0 if 72 <= n < 80 else 100.0, "good")],
                          [], [], [], (0, 0, 0))
    hist.close()
    cfg = load_config(write(tmp_path, {
        "devices": [{"group": "bat", "kind": "battery", "ports": [1]},
                    {"group": "head", "kind": "meter", "ports": [2]}],
        "optimize_every_s": 900, "objective": "peak",
        "historian": {"path": "h.sqlite", "synchronous": "NORMAL"}}))
    ctl = build_controller(cfg, SteppedClock(t0))
    try:
        f = ctl.scheduler.head_forecast
        times = t0 + 900.0 * np.arange(96)
        assert ctl.scheduler.objective == "peak"
        assert np.allclose(f(times), np.where((np.arange(96) >= 72) & (np.arange(96) < 80), 200.0, 100.0))
    finally:
        for link in {id(x): x for x in ctl.links.values()}.values():
            link.close()
        ctl.hist.close()
