"""Data quality from the service config and on battery counters (issue 17), over emulated
SunSpec devices on 127.0.0.1 (device_emulators.EmulatorHost).

- `quality:` in the service YAML reaches the running checks (config -> Spec -> DataQuality):
  a tighter stuck threshold on the meter flags a frozen meter on the first frozen poll, the
  default a poll later; invalid values stop `controller serve` with one line, exit 2.
- Battery energy counters (SunSpec 701 TotWhAbs/TotWhInj; the block is 155 registers, read in
  two requests) are read and checked: a frozen discharging battery is flagged stuck within 3
  polls, a counter going backwards is flagged at once."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from controller.clock import SteppedClock
from controller.config import ConfigError, load_config
from controller.service import build_controller
from device_emulators import EmulatorHost
from device_emulators.faults import clear, inject
from scenarios.model import Scenario
from twin.simulation import Twin

ROOT = Path(__file__).resolve().parent.parent


def _cfg(tmp: Path, rows, name: str, **extra) -> Path:
    groups: dict[str, dict] = {}
    for e in rows:
        g = groups.setdefault(e["group"], {"group": e["group"], "kind": e["kind"], "ports": [], "units": []})
        g["ports"].append(e["port"])
        g["units"].append(e["unit"])
    p = tmp / f"{name}.yaml"
    p.write_text(yaml.safe_dump({"name": name, "cycle_s": 1.0, "devices": list(groups.values()),
                                 "link": {"timeout_s": 2.0},
                                 "historian": {"path": str(tmp / name / "h.sqlite"), "synchronous": "NORMAL"},
                                 **extra}))
    return p


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    tw = Twin(Scenario.model_validate(dict(
        name="dqc", start="2026-06-21T11:00:00Z", duration_s=900, seed=5, device_step_s=1,
        power_flow_interval_s=10, feeder={"kind": "cigre_lv"},
        fleet=[{"name": "bat", "kind": "battery", "count": 2,
                "params": {"e_cap_kwh": 40, "p_max_kw": 10, "soc_init_pct": 80}}],
        weather={"kind": "synthetic", "latitude_deg": 48.1, "longitude_deg": 11.6, "cloudiness": 0.0},
        outputs={"report": False})))
    host = EmulatorHost(tw, rtu=False)
    rows = [r for r in host.start() if r["protocol"] == "modbus"]
    tmp = tmp_path_factory.mktemp("dqc")
    t0 = tw.scenario.start.timestamp()
    clock = SteppedClock(t0)
    default = build_controller(load_config(_cfg(tmp, rows, "default")), clock)
    tight = build_controller(load_config(_cfg(tmp, rows, "tight", quality={
        "meter": {"stuck_polls": 1, "stuck_min_s": 0}, "battery": {"rating_factor": 1.5}})), clock)
    state = {"t": 0.0}

    def poll(n=1):
        for _ in range(n):
            state["t"] += 1.0
            host.step(state["t"])
            clock.advance_to(t0 + state["t"])
            default.cycle(t0 + state["t"])
            tight.cycle(t0 + state["t"])

    yield default, tight, host, poll
    for c in (default, tight):
        for link in {id(lk): lk for lk in c.links.values()}.values():
            link.close()
        c.hist.close()
    host.stop()


def suspect(ctl, dev, check=""):
    return [a for a in ctl.hist.alarms(active_only=True)
            if a["kind"] == "data_suspect" and a["device_id"] == dev and check in a["message"]]


def test_quality_section_reaches_the_checks(rig):
    default, tight, host, poll = rig
    assert tight.acquisition.quality.checks["meter"].stuck_polls == 1
    assert tight.acquisition.quality.checks["battery"].rating_factor == 1.5
    assert tight.acquisition.quality.checks["battery"].stuck_polls == 3  # unset keys keep the default
    assert default.acquisition.quality.checks["meter"].stuck_polls == 3
    poll(12)  # past a power-flow step: the meter's counters move
    assert not suspect(default, "meter/0") and not suspect(tight, "meter/0")
    inject(host, "freeze", "meter")
    try:
        seen = {}
        for k in range(1, 5):
            poll()
            for name, c in (("default", default), ("tight", tight)):
                if name not in seen and suspect(c, "meter/0", "stuck"):
                    seen[name] = k
        assert seen.get("tight") == 1, seen  # flagged on the first frozen poll
        assert seen.get("default", 99) > seen["tight"] and seen["default"] <= 3, seen
    finally:
        clear(host, "freeze", "meter")
    poll(3)
    assert not suspect(default, "meter/0") and not suspect(tight, "meter/0")


def test_battery_counters_are_read_and_checked(rig):
    default, tight, host, poll = rig
    bat = default.state.groups["bat"]
    poll(2)
    e_exp0 = bat.values["e_exp_kwh"].copy()
    assert np.all(np.isfinite(e_exp0)) and np.all(e_exp0 > 0)  # lifetime counters over 701's 2nd request
    assert np.all(np.isfinite(bat.values["e_imp_kwh"]))
    assert default.links["bat"].write("bat/0", "p_set_kw", -10.0)
    poll(8)  # the battery answers within its response time and discharges
    assert bat.values["p_kw"][0] < -9.0
    assert bat.values["e_exp_kwh"][0] > e_exp0[0] + 0.01  # the export counter runs
    assert not suspect(default, "bat/0")
    inject(host, "freeze", "bat:0")
    try:
        for k in range(1, 4):
            poll()
            if suspect(default, "bat/0", "stuck"):
                break
        a = suspect(default, "bat/0", "stuck")
        assert a and "e_exp_kwh" in a[0]["message"], f"not flagged after {k} polls"
        assert np.isnan(bat.get("p_kw")[0])  # out of dispatch
        assert not suspect(default, "bat/1")
    finally:
        clear(host, "freeze", "bat:0")
    poll(3)
    assert not suspect(default, "bat/0")
    # the device's export counter steps back 5 kWh: flagged on the next poll
    host.devices["bat/0"].acc[1][0] -= 5000.0
    poll()
    assert suspect(default, "bat/0", "counter_backwards")
    assert default.links["bat"].write("bat/0", "p_set_kw", 0.0)


@pytest.mark.parametrize("quality, words", [
    ({"meter": {"stuck_polls": 0}}, ["quality.meter.stuck_polls", "greater than or equal to 1"]),
    ({"meter": {"stuck_min_s": None}}, ["quality.meter", "stuck_min_s cannot be null"]),
    ({"battery": {"rating_factor": "high"}}, ["quality.battery.rating_factor"]),
    ({"heatpump": {"stuck_polls": 2}}, ["quality.heatpump"]),
    ({"pv": {"stuck_poll": 2}}, ["quality.pv.stuck_poll", "Extra inputs"]),
])
def test_bad_quality_values_are_one_line(tmp_path, quality, words):
    cfg = _cfg(tmp_path, [{"group": "b", "kind": "battery", "port": 1502, "unit": 1}], "bad", quality=quality)
    with pytest.raises(ConfigError) as e:
        load_config(cfg)
    msg = str(e.value)
    assert "\n" not in msg and str(cfg) in msg and all(w in msg for w in words), msg


def test_bad_quality_value_stops_serve_exit_2(tmp_path):
    cfg = _cfg(tmp_path, [{"group": "b", "kind": "battery", "port": 1502, "unit": 1}], "bad",
               quality={"meter": {"stuck_polls": -1}})
    r = subprocess.run([sys.executable, "-m", "gridtwin_cli", "controller", "serve", "--config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "quality.meter.stuck_polls" in err[0], err
    assert not (tmp_path / "bad").exists()  # nothing written
