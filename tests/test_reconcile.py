"""Reconcile with the field at start (issue 17, crash safety), over real sockets: the controller
service as a subprocess against emulated devices (device_emulators.EmulatorHost on 127.0.0.1).

A controller sheds the field and is killed with SIGKILL; a controller started on a *fresh*
historian (it knows nothing of that emergency) reads back what the devices hold, raises one
`field_mismatch` alarm per held setpoint and adopts them as an active emergency (default),
which the operator ends with the ordinary restore. With `reconcile: release` the setpoints an
independent client (mbpoll) left in the devices are sent back to neutral at start."""

import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from controller_service import OP, start, stop, wait
from ports import free_port

from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin

MBPOLL = shutil.which("mbpoll")


@pytest.fixture(scope="module")
def field():
    tw = Twin(Scenario.model_validate(dict(
        name="reconcile", start="2026-06-21T16:00:00Z", duration_s=3600, seed=11, device_step_s=1,
        power_flow_interval_s=60, feeder={"kind": "cigre_lv"},  # (a power flow holds the emulators' lock)
        fleet=[{"name": "bat", "kind": "battery", "count": 2,
                "params": {"e_cap_kwh": 20, "p_max_kw": 10, "soc_init_pct": 70}},
               {"name": "ev", "kind": "ev", "count": 1, "params": {"p_max_kw": 11}},
               {"name": "flex", "kind": "flex_load", "count": 1, "params": {"p_nom_kw": 40, "flex_share": 0.5}},
               {"name": "acs", "kind": "tcl", "count": 2},
               {"name": "pv", "kind": "pv", "count": 1, "params": {"p_peak_kw": 20, "s_rated_kva": 25}}],
        weather={"kind": "synthetic", "latitude_deg": 48.1, "longitude_deg": 11.6, "cloudiness": 0.2},
        outputs={"report": False})))
    host = EmulatorHost(tw, rtu=False, meter=False)
    eps = host.start()
    host.step(1.0)  # the first step compiles the twin's kernels: not while a controller starts
    stop = threading.Event()

    def run():  # the field lives: one twin second every 0.5 s (devices apply what they hold)
        t = 1.0
        while not stop.wait(0.5):
            t += 1.0
            host.step(t)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    yield tw, host, eps
    stop.set()
    th.join(10)
    host.stop()


def _config(tmp: Path, eps, name: str, **extra) -> tuple[Path, int]:
    groups: dict[str, dict] = {}
    for e in eps:
        g = groups.setdefault(e["group"], {"group": e["group"], "kind": e["kind"], "ports": [], "units": [],
                                           "poll_s": 0.2})
        g["ports"].append(e["port"])
        g["units"].append(e["unit"])
    port = free_port()
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": name, "cycle_s": 0.25, "devices": list(groups.values()), "link": {"timeout_s": 1.5, "backoff_max_s": 2.0},
        "historian": {"path": str(tmp / name / "historian.sqlite")}, "api": {"port": port},
        "emergency": {"restore_spread_s": 1.0}, **extra}))
    return cfg, port


def _get(port, path):
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=OP, timeout=10).json()


def _shed(tw) -> bool:
    """What the devices hold (the twin behind the emulators): batteries at full discharge (idle
    EVs and loads give no margin at this hour; AC units are held off while they have room)."""
    return bool(np.all(tw.fleets["bat"].p_set_kw <= -9.5))


def _neutral(tw) -> bool:
    f = tw.fleets  # (an emulated device may move to what it was told over a response time)
    return bool(np.all(np.abs(f["bat"].p_set_kw) < 0.05) and np.all(f["ev"].p_max_set_kw > f["ev"].p_max_kw - 0.05)
                and np.all(f["flex"].curtail_pct < 0.5) and np.all(f["acs"].force == 0))


def test_shed_left_by_a_killed_controller_is_adopted_then_restored(field, tmp_path):
    tw, host, eps = field
    log = open(tmp_path / "controller.log", "wb")
    cfg_a, port_a = _config(tmp_path, eps, "a")
    p = start(cfg_a, port_a, log)
    try:
        assert wait(lambda: _get(port_a, "/api/fleet").get("margin", {}).get("battery_kw", 0) > 19.0)
        r = httpx.post(f"http://127.0.0.1:{port_a}/api/emergency/shed", headers=OP, json={"reason": "test"},
                       timeout=20)
        assert r.status_code == 200
        assert wait(lambda: _shed(tw), 20), "the field was not shed"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert _shed(tw)  # nobody released it
        time.sleep(1.0)  # two twin steps: devices have moved to what they were last told
        f = tw.fleets  # what the dead controller left in the field, device by device
        left = ({f"bat/{j}" for j in np.flatnonzero(f["bat"].p_set_kw < -0.05)}
                | {f"ev/{j}" for j in np.flatnonzero(f["ev"].p_max_set_kw < f["ev"].p_max_kw - 0.05)}
                | {f"flex/{j}" for j in np.flatnonzero(f["flex"].curtail_pct > 0.5)}
                | {f"acs/{j}" for j in np.flatnonzero(f["acs"].force != 0)})
        assert {"bat/0", "bat/1"} <= left

        # a controller on a fresh historian: nothing there says the field is shed
        cfg_b, port_b = _config(tmp_path, eps, "b")
        p = start(cfg_b, port_b, log)
        em = _get(port_b, "/api/fleet")["emergency"]
        assert em is not None and em["adopted"] is True and em["by"] == "reconcile"
        assert em["plan"]["commands"] == len(left)  # each held setpoint, as it is held
        assert em["shed_kw"] >= 19.9  # the batteries' discharge
        alarms = [a for a in _get(port_b, "/api/alarms?active=true") if a["kind"] == "field_mismatch"]
        assert {a["device_id"] for a in alarms} == left
        bat0 = next(a for a in alarms if a["device_id"] == "bat/0")
        assert "p_set_kw held -10" in bat0["message"] and "believes 0" in bat0["message"]
        time.sleep(1.0)  # a few cycles: the adopted emergency keeps the field as it was
        assert _shed(tw)
        assert httpx.post(f"http://127.0.0.1:{port_b}/api/emergency/restore", headers=OP,
                          timeout=20).status_code == 200
        assert wait(lambda: _neutral(tw), 20), "the restore did not release the adopted shed"
        assert _get(port_b, "/api/fleet")["emergency"] is None
    finally:
        stop(p)
        log.close()


@pytest.mark.skipif(MBPOLL is None, reason="mbpoll (Debian package) not installed")
def test_release_sends_held_setpoints_back_to_neutral(field, tmp_path):
    tw, host, eps = field
    by_id = {e["device_id"]: e for e in eps}

    def mb(dev, reg, value):
        e = by_id[dev]
        r = subprocess.run([MBPOLL, "-m", "tcp", "-p", str(e["port"]), "-a", str(e["unit"]), "-0", "-1",
                            "-o", "3", "-t", "4", "-r", str(reg), "127.0.0.1", str(value)],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr

    mb("ev/0", 1004, 0)  # EV cap 0 kW
    mb("flex/0", 3002, 1000)  # flex load 100 % curtailed
    mb("acs/1", 2004, 65535)  # TCL unit forced off (-1)
    assert wait(lambda: tw.fleets["ev"].p_max_set_kw[0] < 0.05 and tw.fleets["acs"].force[1] == -1, 10)
    from controller.config import load_config
    from controller.service import build_controller

    cfg, _ = _config(tmp_path, eps, "c", reconcile="release")
    ctl = build_controller(load_config(cfg))  # the service's controller, in-process (WallClock)
    try:
        assert wait(lambda: ctl.cycle() is not None and _neutral(tw), 20), \
            "release did not bring the field back to neutral"
        assert ctl.emergency is None
        alarms = {a["device_id"]: a for a in ctl.hist.alarms(active_only=True) if a["kind"] == "field_mismatch"}
        assert set(alarms) == {"ev/0", "flex/0", "acs/1"}
        assert "force held -1" in alarms["acs/1"]["message"] and "release" in alarms["acs/1"]["message"]
    finally:
        for link in {id(lk): lk for lk in ctl.links.values()}.values():
            link.close()
        ctl.hist.close()


def test_reconcile_setting_is_checked(tmp_path):
    from controller.config import ConfigError, load_config

    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"devices": [{"group": "b", "kind": "battery", "ports": [1502]}],
                                   "reconcile": "ignore"}))
    with pytest.raises(ConfigError) as e:  # `controller serve` prints it as its one line, exit 2
        load_config(cfg)
    assert "reconcile" in str(e.value) and "ignore" in str(e.value) and "\n" not in str(e.value)
    cfg.write_text(yaml.safe_dump({"devices": [{"group": "b", "kind": "battery", "ports": [1502]}],
                                   "reconcile": "release"}))
    assert load_config(cfg).reconcile == "release"


def test_link_capabilities_and_reactive_setpoint_over_sunspec(field):
    """What a link can write per group (the volt/VAR source asks it): the emulated PV inverter
    implements SunSpec 704 VarSet, the emulated battery's 704 has WSet only; q_set_kvar goes to
    the PV (read back by the link and seen by the device) and is refused for the battery."""
    from controller.clock import WallClock
    from controller.links.modbus import ModbusLink

    tw, host, eps = field
    link = ModbusLink([e for e in eps if e["group"] in ("pv", "bat", "ev")], WallClock(), timeout_s=2.0)
    try:
        assert link.writable("pv/0") is None  # not discovered yet: unknown
        link.devices()
        caps = link.capabilities()
        assert caps["pv"] == {"p_limit_pct", "q_set_kvar"}
        assert caps["bat"] == {"p_set_kw"} and caps["ev"] == {"p_max_set_kw"}
        assert link.write("pv/0", "q_set_kvar", 4.0)  # absorb 4 kvar (load convention)
        assert link.read_setpoints()["pv/0"]["q_set_kvar"] == pytest.approx(4.0)
        assert wait(lambda: abs(tw.fleets["pv"].q_set_kvar[0] - 4.0) < 0.1, 20), tw.fleets["pv"].q_set_kvar
        assert not link.write("bat/0", "q_set_kvar", 2.0)
        assert link.write("pv/0", "p_limit_pct", 60.0)
        assert link.read_setpoints()["pv/0"]["p_limit_pct"] == pytest.approx(60.0)
    finally:
        link.write("pv/0", "q_set_kvar", 0.0)
        link.write("pv/0", "p_limit_pct", 100.0)
        link.close()


def test_device_down_at_start_is_reconciled_on_its_first_answer(tmp_path):
    """A battery left discharging that answers only after the controller started joins the
    adopted emergency (alarm, plan); a restart on the same historian resumes the adopted
    emergency (nothing new to reconcile), and the restore releases both."""
    from controller_devices import DeviceServers, SunSpecBattery
    from ports import free_ports

    from controller.assembly import Spec, assemble
    from controller.clock import SteppedClock
    from controller.historian import Historian
    from controller.links.modbus import ModbusLink

    def left_discharging():
        b = SunSpecBattery(p_max_kw=10, e_cap_kwh=40, soc_pct=80)
        b._set(124, "StorCtl_Mod", 2)
        b._set(124, "OutWRte", 600)  # 60 % of WChaMax (SF -1): -6 kW
        return b

    ports = free_ports(2)
    up = DeviceServers([left_discharging()], ports=ports[:1])
    late = None
    t0 = 1_800_000_000.0
    clock = SteppedClock(t0)
    rows = [{"device_id": f"bat/{i}", "group": "bat", "kind": "battery", "host": "127.0.0.1", "port": p,
             "unit": 1} for i, p in enumerate(ports)]
    link = ModbusLink(rows, clock, timeout_s=1.0, max_failures=1, backoff_s=1.0, backoff_max_s=2.0)
    spec = Spec(cycle_s=5.0, optimize_every_s=0, safety_gate=False, settings={"restore_spread_s": 0.0})
    ctl = None
    try:
        ctl = assemble(spec, {"bat": link}, clock, Historian(tmp_path / "h.sqlite"))
        em = ctl.emergency
        assert em["adopted"] and [c.device_id for c in ctl.emergency_src.plan.commands] == ["bat/0"]
        late = DeviceServers([left_discharging()], ports=ports[1:])
        for k in range(1, 5):
            clock.advance_to(t0 + 5 * k)
            ctl.cycle(t0 + 5 * k)
        cmds = {(c.device_id, c.value) for c in ctl.emergency_src.plan.commands}
        assert cmds == {("bat/0", -6.0), ("bat/1", -6.0)}
        assert ctl.emergency["since"] == em["since"] and ctl.emergency["shed_kw"] == pytest.approx(12.0)
        assert {a["device_id"] for a in ctl.hist.alarms(active_only=True) if a["kind"] == "field_mismatch"} \
            == {"bat/0", "bat/1"}
        assert [round(d.setpoint_kw(), 3) for d in up.devices + late.devices] == [-6.0, -6.0]  # kept
        # restart on the same historian: the adopted emergency is resumed, the field agrees
        link.close()
        ctl.hist.close()
        link = ModbusLink(rows, clock, timeout_s=1.0, max_failures=1, backoff_s=1.0, backoff_max_s=2.0)
        ctl = assemble(spec, {"bat": link}, clock, Historian(tmp_path / "h.sqlite"))
        assert ctl.emergency["adopted"] and ctl.emergency.get("resumed")
        assert {(c.device_id, c.value) for c in ctl.emergency_src.plan.commands} == cmds
        assert ctl.hist.events_of("reconcile")[-1]["findings"] == []
        ctl.set_emergency(False, reason="operator decided")
        for k in range(5, 8):
            clock.advance_to(t0 + 5 * k)
            ctl.cycle(t0 + 5 * k)
        assert [round(d.setpoint_kw(), 3) for d in up.devices + late.devices] == [0.0, 0.0]
    finally:
        link.close()
        if ctl is not None:
            ctl.hist.close()
        up.close()
        if late is not None:
            late.close()
