"""Reconcile with the field at start (issue 17, crash safety), over real sockets: the controller
service as a subprocess against emulated devices (device_emulators.EmulatorHost on 127.0.0.1).

A controller sheds the field and is killed with SIGKILL; a controller started on a *fresh*
historian (it knows nothing of that emergency) reads back what the devices hold, raises one
`field_mismatch` alarm per held setpoint and adopts them as an active emergency (default),
which the operator ends with the ordinary restore. With `reconcile: release` the setpoints an
independent client (mbpoll) left in the devices are sent back to neutral at start."""

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from ports import free_port

from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin

ROOT = Path(__file__).resolve().parent.parent
OP = {"Authorization": "Bearer op-secret"}
MBPOLL = shutil.which("mbpoll")


@pytest.fixture(scope="module")
def field():
    tw = Twin(Scenario.model_validate(dict(
        name="reconcile", start="2026-06-21T16:00:00Z", duration_s=3600, seed=11, device_step_s=1,
        power_flow_interval_s=10, feeder={"kind": "cigre_lv"},
        fleet=[{"name": "bat", "kind": "battery", "count": 2,
                "params": {"e_cap_kwh": 20, "p_max_kw": 10, "soc_init_pct": 70}},
               {"name": "ev", "kind": "ev", "count": 1, "params": {"p_max_kw": 11}},
               {"name": "flex", "kind": "flex_load", "count": 1, "params": {"p_nom_kw": 40, "flex_share": 0.5}},
               {"name": "acs", "kind": "tcl", "count": 2}],
        weather={"kind": "synthetic", "latitude_deg": 48.1, "longitude_deg": 11.6, "cloudiness": 0.2},
        outputs={"report": False})))
    host = EmulatorHost(tw, rtu=False, meter=False)
    eps = host.start()
    stop = threading.Event()

    def run():  # the field lives: one twin second every 0.5 s (devices apply what they hold)
        t = 0.0
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


def _start(cfg: Path, port: int, log):
    env = dict(os.environ, GRIDTWIN_API_TOKENS="op-secret:olga:operator")
    p = subprocess.Popen([sys.executable, "-m", "gridtwin_cli", "controller", "serve", "--config", str(cfg)],
                         cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    for _ in range(600):
        if p.poll() is not None:
            raise RuntimeError(f"controller exited with {p.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/api/whoami", headers=OP, timeout=2).status_code == 200:
                return p
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    p.kill()
    raise RuntimeError("controller API did not come up in 60 s")


def _stop(p) -> None:
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(10)


def _wait(pred, timeout_s=30.0) -> bool:
    end = time.time() + timeout_s
    while time.time() < end:
        if pred():
            return True
        time.sleep(0.1)
    return False


def _get(port, path):
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=OP, timeout=10).json()


def _shed(tw) -> bool:
    """What the devices hold (the twin behind the emulators): batteries at full discharge (idle
    EVs and loads give no margin at this hour; AC units are held off while they have room)."""
    return bool(np.all(tw.fleets["bat"].p_set_kw <= -9.9))


def _neutral(tw) -> bool:
    f = tw.fleets
    return (np.all(np.abs(f["bat"].p_set_kw) < 1e-6) and np.allclose(f["ev"].p_max_set_kw, f["ev"].p_max_kw)
            and np.all(f["flex"].curtail_pct < 1e-6) and np.all(f["acs"].force == 0))


def test_shed_left_by_a_killed_controller_is_adopted_then_restored(field, tmp_path):
    tw, host, eps = field
    log = open(tmp_path / "controller.log", "wb")
    cfg_a, port_a = _config(tmp_path, eps, "a")
    p = _start(cfg_a, port_a, log)
    try:
        assert _wait(lambda: _get(port_a, "/api/fleet").get("margin", {}).get("battery_kw", 0) > 19.0)
        r = httpx.post(f"http://127.0.0.1:{port_a}/api/emergency/shed", headers=OP, json={"reason": "test"},
                       timeout=20)
        assert r.status_code == 200
        assert _wait(lambda: _shed(tw), 20), "the field was not shed"
        p.send_signal(signal.SIGKILL)
        p.wait(10)
        assert _shed(tw)  # nobody released it
        f = tw.fleets  # what the dead controller left in the field, device by device
        left = ({f"bat/{j}" for j in np.flatnonzero(f["bat"].p_set_kw < -1e-6)}
                | {f"ev/{j}" for j in np.flatnonzero(f["ev"].p_max_set_kw < f["ev"].p_max_kw - 0.05)}
                | {f"flex/{j}" for j in np.flatnonzero(f["flex"].curtail_pct > 0.5)}
                | {f"acs/{j}" for j in np.flatnonzero(f["acs"].force != 0)})
        assert {"bat/0", "bat/1"} <= left

        # a controller on a fresh historian: nothing there says the field is shed
        cfg_b, port_b = _config(tmp_path, eps, "b")
        p = _start(cfg_b, port_b, log)
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
        assert _wait(lambda: _neutral(tw), 20), "the restore did not release the adopted shed"
        assert _get(port_b, "/api/fleet")["emergency"] is None
    finally:
        _stop(p)
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
    assert tw.fleets["ev"].p_max_set_kw[0] == 0 and tw.fleets["acs"].force[1] == -1
    log = open(tmp_path / "controller.log", "wb")
    cfg, port = _config(tmp_path, eps, "c", reconcile="release")
    p = _start(cfg, port, log)
    try:
        assert _wait(lambda: _neutral(tw), 20), "release did not bring the field back to neutral"
        assert _get(port, "/api/fleet")["emergency"] is None
        alarms = {a["device_id"]: a for a in _get(port, "/api/alarms?active=true") if a["kind"] == "field_mismatch"}
        assert set(alarms) == {"ev/0", "flex/0", "acs/1"}
        assert "force held -1" in alarms["acs/1"]["message"] and "release" in alarms["acs/1"]["message"]
    finally:
        _stop(p)
        log.close()


def test_reconcile_setting_is_checked(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"devices": [{"group": "b", "kind": "battery", "ports": [1502]}],
                                   "reconcile": "ignore"}))
    r = subprocess.run([sys.executable, "-m", "gridtwin_cli", "controller", "serve", "--config", str(cfg)],
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "reconcile" in err[0] and "ignore" in err[0]
