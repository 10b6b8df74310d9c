"""Run-time fault control (issue 13 item 17): `gridtwin emulate fault inject|clear|list --control
HOST:P` against a running emulator host's control port; each change in events.jsonl."""

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin

GRIDTWIN = [str(Path(sys.executable).parent / "gridtwin"), "emulate", "fault"]


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    s = Scenario.model_validate(dict(
        name="ctl", start="2026-06-21T11:00:00Z", duration_s=600, seed=4, feeder={"kind": "cigre_lv"},
        fleet=[{"name": "pv", "kind": "pv", "count": 2}], outputs={"report": False}))
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False, meter=False)
    eps = {e["device_id"]: e for e in host.start()}
    events = tmp_path_factory.mktemp("ctl") / "events.jsonl"
    port = host.start_control(0, events)
    host.step(10)
    yield host, eps, f"127.0.0.1:{port}", events
    host.stop()


def cli(*args):
    """The `gridtwin emulate fault ...` command line in a subprocess (exit code, stderr)."""
    return subprocess.run([*GRIDTWIN, *args], capture_output=True, text=True, timeout=120)


def main(capsys, *args):
    """The same command line in this process (gridtwin_cli.main): rc and the printed reply."""
    from gridtwin_cli import main as gridtwin

    rc = gridtwin(["emulate", "fault", *args])
    out = capsys.readouterr().out
    return rc, json.loads(out) if out.strip() else None


def read_s(port, timeout_s=10.0):
    """One raw Modbus read of 'SunS'; seconds until the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as s:
        t = time.perf_counter()
        s.sendall(struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, 40000, 2))
        assert s.recv(64)[7:9] == bytes([3, 4])
        return time.perf_counter() - t


def test_inject_list_clear_while_running(rig, capsys):
    host, eps, ctl, events = rig
    r = cli("inject", "latency", "pv:1", "0.5", "--control", ctl)
    assert r.returncode == 0 and json.loads(r.stdout)["ok"], r.stderr
    assert host.devices["pv/1"].latency_s == 0.5 and host.devices["pv/0"].latency_s == 0
    assert read_s(eps["pv/1"]["port"]) >= 0.45  # a field client sees it at once
    rc, listed = main(capsys, "list", "--control", ctl)
    assert rc == 0 and listed["faults"] == [{"kind": "latency", "target": "pv:1", "value": 0.5}]
    assert main(capsys, "clear", "latency", "pv:1", "--control", ctl)[0] == 0
    assert host.devices["pv/1"].latency_s == 0 and not host.active_faults
    logged = [json.loads(line) for line in events.read_text().splitlines()]
    assert [(e["kind"], e["fault"], e["target"], e["source"]) for e in logged] == [
        ("fault_start", "latency", "pv:1", "control"), ("fault_end", "latency", "pv:1", "control")]
    assert [e["kind"] for e in host.twin.events.events if e["kind"].startswith("fault_")] == [
        "fault_start", "fault_end"]


def test_bad_requests_are_one_line_errors(rig):
    from device_emulators.control import request

    host, eps, ctl, events = rig
    r = cli("inject", "latency", "nosuch:7", "--control", ctl)  # the CLI: exit 2, one line
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "nosuch" in r.stderr, r.stderr
    for req in ({"op": "inject", "kind": "melt", "target": "pv:0"}, {"op": "clear", "kind": "drop", "target": "pv:0"},
                {"op": "inject", "kind": "latency"}, {"op": "reboot"}):
        reply = request(ctl, req)
        assert reply["ok"] is False and reply["error"], req
    assert not host.active_faults
