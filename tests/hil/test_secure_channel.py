"""Secure command channel on real loopback sockets: controller link -> command gateway -> lab
device process (pymodbus SunSpec emulator on 127.0.0.2). Genuine setpoints reach the device;
replayed, altered, foreign and garbage traffic is refused and the device is not touched."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest
from conftest import ROOT
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from ports import free_port

from controller.clock import WallClock
from controller.links.modbus import ModbusLink
from controller.links.secure import SecureCommandLink, secure_link_from_config
from controller.security.channel import recv_frame, send_frame
from controller.security.envelope import Signer, hello
from controller.security.keys import (
    SecretError,
    generate_private_key,
    load_private_key,
    public_bytes,
    write_secret_file,
)
from hil.command_gateway import CommandGateway

pytestmark = pytest.mark.timeout(120)

LAB = (ROOT / "scenarios/hil/lab_bench_pv.yaml").read_text()  # the lab bench twin
DEV = "lab_pv/0"


def _row(port):
    return {"device_id": DEV, "group": "lab_pv", "kind": "pv", "host": "127.0.0.2", "port": port, "unit": 1}


def _fresh_link(port) -> ModbusLink:
    """A plain ModbusLink that polls on every read (the gateway's and the observer's view)."""
    return ModbusLink([_row(port)], WallClock(), timeout_s=1.0, poll_s=1e-6, stale_factor=1e9)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """Lab device process, keys (mode 600 in tmp), and an in-process gateway in front of it."""
    d = tmp_path_factory.mktemp("secure")
    (d / "lab.yaml").write_text(LAB)
    port = free_port("127.0.0.2")
    proc = subprocess.Popen([sys.executable, "-m", "hil.lab_device", str(d / "lab.yaml"), "--group", "lab_pv",
                             "--host", "127.0.0.2", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        ctl_key = generate_private_key(d / "controller.pem")
        gw_key = generate_private_key(d / "gateway.pem")
        write_secret_file(d / "trust.json", json.dumps({"controller": public_bytes(ctl_key).hex()}).encode())
        write_secret_file(d / "gateway_pub.json", json.dumps({"gateway": public_bytes(gw_key).hex()}).encode())
        gw = CommandGateway(_fresh_link(port), gw_key, {"controller": ctl_key.public_key()}, "127.0.0.2",
                            free_port("127.0.0.2"), hello_timeout_s=1.0).start()
        obs = _fresh_link(port)
        yield {"dir": d, "port": port, "gw": gw, "ctl_key": ctl_key, "gw_key": gw_key, "obs": obs}
        obs.close()
        gw.stop()
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def device_limit(rig) -> float:
    return rig["obs"].read()[DEV]["p_limit_pct"].value


def link_to(rig, addr=None, **kw) -> SecureCommandLink:
    gw = rig["gw"]
    return SecureCommandLink(_fresh_link(rig["port"]), addr or f"{gw.host}:{gw.port}", rig["ctl_key"],
                             rig["gw_key"].public_key(), **kw)


class TapProxy:
    """A man in the middle on loopback: forwards frames both ways, records the controller's,
    and can inject frames of its own towards the gateway."""

    def __init__(self, upstream: tuple[str, int]):
        self.upstream = upstream
        self.lsock = socket.create_server(("127.0.0.1", 0))
        self.addr = f"127.0.0.1:{self.lsock.getsockname()[1]}"
        self.sent: list[dict] = []  # controller -> gateway
        self.replies: list[dict] = []  # gateway -> controller
        self.up: socket.socket | None = None
        self._wlock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        self.lsock.settimeout(10)
        down, _ = self.lsock.accept()
        self.up = socket.create_connection(self.upstream, timeout=10)
        threading.Thread(target=self._pump, args=(self.up, down, self.replies, threading.Lock()), daemon=True).start()
        self._pump(down, self.up, self.sent, self._wlock)

    @staticmethod
    def _pump(src, dst, log, lock):
        try:
            while True:
                f = recv_frame(src, 30.0)
                log.append(f)
                with lock:
                    send_frame(dst, f)
        except OSError:
            pass

    def close(self):
        for s in (self.up, self.lsock):
            if s is not None:
                s.close()

    def inject(self, frame: dict) -> dict:
        """Send `frame` to the gateway inside the live session; return the gateway's answer."""
        n = len(self.replies)
        with self._wlock:
            send_frame(self.up, frame)
        for _ in range(200):
            if len(self.replies) > n:
                return self.replies[n]
            time.sleep(0.01)
        raise AssertionError("gateway did not answer the injected frame")


def refusal_reason(ack: dict, rig) -> str:
    """The reason in a (plain-session) acknowledgement, which must be a refusal."""
    from controller.security.channel import open_ack

    _, payload = open_ack(ack, rig["gw_key"].public_key(), None)
    assert payload["accepted"] is False
    return payload["reason"]


def test_setpoint_reaches_device_and_replayed_altered_foreign_envelopes_do_not(rig):
    gw = rig["gw"]
    proxy = TapProxy((gw.host, gw.port))
    link = link_to(rig, proxy.addr, encrypt=False)  # plain signed: the proxy can read the acks
    before = gw.stats()
    assert link.write(DEV, "p_limit_pct", 40.0) is True
    assert device_limit(rig) == pytest.approx(40.0, abs=0.5)
    assert link.readback[DEV]["p_limit_pct"] == pytest.approx(40.0, abs=0.5), "ack carries the read-back"
    captured = next(f for f in proxy.sent if f["op"] == "cmd")
    assert link.write(DEV, "p_limit_pct", 70.0) is True
    assert device_limit(rig) == pytest.approx(70.0, abs=0.5)

    # replay inside the live session: refused, the device stays at 70
    assert "replayed" in refusal_reason(proxy.inject(captured), rig)
    assert device_limit(rig) == pytest.approx(70.0, abs=0.5)

    # one byte of the captured envelope flipped (value 40.0 -> 10.0): the signature no longer holds
    wire = captured["env"]
    i = wire.index('"value\\":40.0') + len('"value\\":')
    flipped = wire[:i] + "1" + wire[i + 1:]
    assert sum(a != b for a, b in zip(wire, flipped)) == 1
    assert "bad signature" in refusal_reason(proxy.inject({"op": "cmd", "env": flipped}), rig)

    # a well-formed envelope signed by a key the gateway does not trust, under the trusted name
    forged = Signer("controller", Ed25519PrivateKey.generate()).seal(
        {"device_id": DEV, "setpoint": "p_limit_pct", "value": 5.0})
    assert "bad signature" in refusal_reason(proxy.inject({"op": "cmd", "env": forged}), rig)
    assert device_limit(rig) == pytest.approx(70.0, abs=0.5)

    # the genuine controller goes on in the same session (stray acks are skipped by request id)
    assert link.write(DEV, "p_limit_pct", 55.0) is True
    assert device_limit(rig) == pytest.approx(55.0, abs=0.5)
    after = gw.stats()
    assert after["accepted"] - before["accepted"] == 3
    assert after["refused"].get("envelope", 0) - before["refused"].get("envelope", 0) == 3

    # the whole captured conversation replayed raw over a new connection: its hello is refused
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:
        for f in proxy.sent[:2]:
            send_frame(s, f)
        answer = recv_frame(s, 5.0)
        assert answer["op"] == "error" and "replayed session hello" in answer["reason"]
    # a hello from an untrusted key is refused before any envelope is looked at
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:
        _, h = hello("controller", Ed25519PrivateKey.generate())
        send_frame(s, {"op": "hello", "hello": h})
        answer = recv_frame(s, 5.0)
        assert answer["op"] == "error" and "bad signature" in answer["reason"]
    assert device_limit(rig) == pytest.approx(55.0, abs=0.5)
    assert gw.stats()["refused"]["hello"] - before["refused"].get("hello", 0) == 2
    link.close()
    proxy.close()


def test_encrypted_session_hides_commands_and_gateway_survives_hostile_clients(rig):
    gw = rig["gw"]
    proxy = TapProxy((gw.host, gw.port))
    link = link_to(rig, proxy.addr, encrypt=True)
    assert link.write(DEV, "p_limit_pct", 62.0) is True
    assert device_limit(rig) == pytest.approx(62.0, abs=0.5)
    cmd = next(f for f in proxy.sent if f["op"] == "cmd")
    assert json.loads(cmd["env"])["enc"] is True and "p_limit_pct" not in cmd["env"]
    ack = proxy.replies[-1]
    assert ack["enc"] and "p_limit_pct" not in ack["body"], "the read-back is encrypted too"
    assert proxy.inject(cmd)["enc"], "replay answered (refused) inside the encrypted session"
    assert link.write(DEV, "p_limit_pct", 62.0) is True and link.refused == 0
    link.close()
    proxy.close()

    before = gw.stats()["refused"].get("frame", 0)
    hostile = [
        b"\x00\x00\x00\x05hello",  # not JSON
        b"\x7f\xff\xff\xff" + b"x" * 1000,  # announces a 2 GiB frame
        b"\x00\x00\x00\x04[1]\n",  # JSON but not an object with an op
        b"\x00\x00\x10\x00{\"op\":",  # half a frame, then the client vanishes
    ]
    for blob in hostile:
        with socket.create_connection((gw.host, gw.port), timeout=5) as s:
            s.settimeout(5)
            try:
                s.sendall(blob)
                s.shutdown(socket.SHUT_WR)
                while s.recv(4096):  # the gateway answers (or not) and closes: no hang
                    pass
            except (ConnectionResetError, BrokenPipeError, OSError) as e:  # it closed first
                assert not isinstance(e, TimeoutError), "the gateway must close, not hang"
    with socket.create_connection((gw.host, gw.port), timeout=5) as s:  # says nothing at all
        s.settimeout(5)
        assert s.recv(4096) == b"", "closed by the gateway's 1 s hello timeout"
    assert gw.stats()["refused"]["frame"] - before == 3
    good = link_to(rig)
    assert good.write(DEV, "p_limit_pct", 48.0) is True, "the next good client is served"
    assert device_limit(rig) == pytest.approx(48.0, abs=0.5)
    good.close()


def test_gateway_requiring_encryption_refuses_plain_envelopes(rig):
    # made (and perhaps captured) a second before this gateway started: its replay memory is new
    key = os.urandom(32)
    old = Signer("controller", rig["ctl_key"], key, clock=lambda: time.time() - 1.0).seal(
        {"device_id": DEV, "setpoint": "p_limit_pct", "value": 12.0})
    gw2 = CommandGateway(_fresh_link(rig["port"]), rig["gw_key"], {"controller": rig["ctl_key"].public_key()},
                         "127.0.0.2", free_port("127.0.0.2"), require_encryption=True).start()
    try:
        from controller.security.channel import open_ack

        _, payload = open_ack(gw2.handle(old, key, "controller"), rig["gw_key"].public_key(), key)
        assert not payload["accepted"] and "predates" in payload["reason"]
        plain = link_to(rig, f"{gw2.host}:{gw2.port}", encrypt=False)
        assert plain.write(DEV, "p_limit_pct", 33.0) is False
        assert plain.refused == 1 and "encrypted envelopes only" in plain.last_error
        assert device_limit(rig) != pytest.approx(33.0, abs=0.5)
        enc = link_to(rig, f"{gw2.host}:{gw2.port}", encrypt=True)
        assert enc.write(DEV, "p_limit_pct", 36.0) is True
        assert device_limit(rig) == pytest.approx(36.0, abs=0.5)
        # an unknown device and a setpoint the device does not support are refused, not crashed on
        assert enc.write("lab_pv/9", "p_limit_pct", 10.0) is False and "not behind" in enc.last_error
        plain.close()
        enc.close()
    finally:
        gw2.stop()


def test_cli_gateway_endpoint_wiring_and_key_file_checks(rig):
    from hil.bridge import real_endpoint_rows
    from hil.controller_adapter import make_links
    from scenarios.load import ScenarioError, load_scenario
    from scenarios.model import SecureChannel

    d, gw_port = rig["dir"], free_port("127.0.0.2")
    cmd = [sys.executable, "-m", "hil.command_gateway", "--listen", f"127.0.0.2:{gw_port}",
           "--device", f"{DEV}=127.0.0.2:{rig['port']}:1:pv", "--key", str(d / "gateway.pem"),
           "--trust", str(d / "trust.json")]
    os.chmod(d / "gateway.pem", 0o644)  # through the `gridtwin hil gateway` front end this time
    bad = subprocess.run([sys.executable, "-m", "gridtwin_cli", "hil", "gateway", "--", *cmd[3:]],
                         check=False, cwd=ROOT, capture_output=True, text=True, timeout=60)
    os.chmod(d / "gateway.pem", 0o600)
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and "world-readable" in bad.stderr and "gateway.pem" in bad.stderr

    # the scenario's endpoint carries the secure block; the adapter wraps those rows
    hil = d / "hil.yaml"
    hil.write_text(LAB.replace("name: lab_bench", "name: hil_bench").replace(
        "params: {p_peak_kw: 400, s_rated_kva: 400}}",
        f"params: {{p_peak_kw: 400, s_rated_kva: 400}},\n     endpoint: {{host: 127.0.0.2, port: {rig['port']}, "
        f"unit: 1, map: sunspec_pv, secure: {{gateway: '127.0.0.2:{gw_port}', key_file: controller.pem, "
        f"gateway_pubkey_file: gateway_pub.json}}}}}}"))
    rows = real_endpoint_rows(load_scenario(hil))
    assert rows[0]["secure"]["key_file"] == str(d / "controller.pem")
    bad_yaml = d / "bad.yaml"
    bad_yaml.write_text(hil.read_text().replace(f"gateway: '127.0.0.2:{gw_port}'", "gateway: '10.0.0.1:7700'"))
    with pytest.raises(ScenarioError, match=r"bad\.yaml: fleet\[0\]\.endpoint") as err:
        load_scenario(bad_yaml)  # (the loader reports a union's first branch; the reason is below)
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=r"gateway must be a loopback host:port"):
        SecureChannel(gateway="10.0.0.1:7700")

    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"READY 127.0.0.2 {gw_port}") and DEV in line, line
        links = make_links(rows, WallClock())
        assert list(links) == [f"secure@127.0.0.2:{gw_port}"]
        link = links[f"secure@127.0.0.2:{gw_port}"]
        assert [i.device_id for i in link.devices()] == [DEV]
        assert link.write(DEV, "p_limit_pct", 81.0) is True
        assert device_limit(rig) == pytest.approx(81.0, abs=0.5)
        assert link.read()[DEV]["p_limit_pct"].value == pytest.approx(81.0, abs=0.5), "reads: inner link"
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=20)
    stats = json.loads(out.split("STOPPED ", 1)[1])
    assert stats["accepted"] == 1 and stats["refused_total"] == 0
    # gateway gone: the write fails like any link write, no exception, counted
    assert link.write(DEV, "p_limit_pct", 20.0) is False and link.failures == 1
    assert device_limit(rig) == pytest.approx(81.0, abs=0.5)
    link.close()

    os.chmod(d / "controller.pem", 0o644)
    try:
        with pytest.raises(SecretError, match=r"controller\.pem: secret file is world-readable"):
            secure_link_from_config(_fresh_link(rig["port"]), rows[0]["secure"])
    finally:
        os.chmod(d / "controller.pem", 0o600)
    assert load_private_key(d / "controller.pem") is not None


LAB_BAT = LAB.replace("name: lab_bench", "name: lab_bench_bat").replace(
    "{name: lab_pv, kind: pv, count: 1, placement: {rule: buses, buses: [5]},\n"
    "     params: {p_peak_kw: 400, s_rated_kva: 400}}",
    "{name: lab_bat, kind: battery, count: 1, placement: {rule: buses, buses: [5]},\n"
    "     params: {p_max_kw: 100, e_cap_kwh: 200, soc_init_pct: 80}}")


def test_controller_dispatches_a_dr_event_to_a_battery_through_the_gateway(rig):
    """The real controller (controller.core) sees the battery through a SecureCommandLink; its
    DR dispatch reaches the lab battery only as verified envelopes, and the battery delivers."""
    from controller.commands import PassThroughGate
    from controller.core import Controller

    d, port = rig["dir"], free_port("127.0.0.2")
    assert "lab_bat" in LAB_BAT
    (d / "lab_bat.yaml").write_text(LAB_BAT)
    proc = subprocess.Popen([sys.executable, "-m", "hil.lab_device", str(d / "lab_bat.yaml"), "--group", "lab_bat",
                             "--host", "127.0.0.2", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    row = {"device_id": "lab_bat/0", "group": "lab_bat", "kind": "battery", "host": "127.0.0.2", "port": port,
           "unit": 1}
    gw = None
    try:
        assert proc.stdout.readline().startswith("READY")
        fresh = {"timeout_s": 1.0, "poll_s": 1e-6, "stale_factor": 1e9}
        gw = CommandGateway(ModbusLink([row], WallClock(), **fresh), rig["gw_key"],
                            {"controller": rig["ctl_key"].public_key()}, "127.0.0.2", 0).start()
        link = SecureCommandLink(ModbusLink([row], WallClock()), f"{gw.host}:{gw.port}", rig["ctl_key"],
                                 rig["gw_key"].public_key())
        obs = ModbusLink([row], WallClock(), **fresh)
        ctl = Controller({"lab_bat": link}, WallClock(), PassThroughGate())
        assert ctl.cycle()["commands"] == 0 and gw.stats()["accepted"] == 0
        assert obs.read()["lab_bat/0"]["p_kw"].value == pytest.approx(0.0, abs=0.5)
        ctl.add_dr_event("ev1", time.time() - 1.0, 600.0, 100.0, ["lab_bat"], source="test")
        assert ctl.cycle()["commands"] == 1
        assert gw.stats()["accepted"] == 1 and link.secure_writes == 1 and link.refused == 0
        assert link.last_ack["confirmed"] and link.last_ack["readback"]["soc_pct"] == pytest.approx(80.0, abs=1.0)
        p_kw = 0.0
        for _ in range(50):  # the lab battery's own twin steps once a second
            p_kw = obs.read()["lab_bat/0"]["p_kw"].value
            if p_kw < -99.0:
                break
            time.sleep(0.1)
        assert p_kw == pytest.approx(-100.0, abs=1.0), "the battery discharges its full 100 kW for the event"
        obs.close()
        link.close()
    finally:
        if gw is not None:
            gw.stop()
        proc.terminate()
        proc.wait(timeout=20)
