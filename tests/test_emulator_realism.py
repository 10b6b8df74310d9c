"""What a field client tells an emulator by (issue 13 items 10, 11): identity configurable per
group (SunSpec model 1 and Modbus device identification agree), lifetime energy counters, a
grid frequency that wanders, a measurement refresh period, a connection limit and a "busy"
answer to requests faster than the device takes them. Seen by raw sockets and pysunspec2."""

import socket
import struct

import pytest
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin


@pytest.fixture(scope="module")
def rig():
    s = Scenario.model_validate(dict(
        name="real", start="2026-06-21T11:00:00Z", duration_s=600, seed=9, feeder={"kind": "cigre_lv"},
        fleet=[{"name": "pv", "kind": "pv", "count": 2, "params": {"p_peak_kw": 30, "s_rated_kva": 30},
                "emulation": {"manufacturer": "Acme Solar", "model": "AS-30", "firmware": "2.7.1",
                              "serial_pattern": "AS{serial:08d}", "refresh_s": 5, "max_connections": 1}},
               {"name": "bat", "kind": "battery", "count": 1,
                "emulation": {"min_request_interval_s": 0.5}}],
        outputs={"report": False}))
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False, meter=False)
    eps = {e["device_id"]: e for e in host.start()}
    host.step(60)
    yield twin, host, eps
    host.stop()


def ask(sock, pdu, tid=1):
    sock.sendall(struct.pack(">HHHB", tid, 0, len(pdu) + 1, 1) + pdu)
    head = sock.recv(7, socket.MSG_WAITALL)
    n = struct.unpack(">H", head[4:6])[0] - 1
    return sock.recv(n, socket.MSG_WAITALL)


def test_identity_counters_and_frequency(rig):
    twin, host, eps = rig
    d = SunSpecModbusClientDeviceTCP(slave_id=1, ipaddr="127.0.0.1", ipport=eps["pv/1"]["port"], timeout=5)
    try:
        d.scan()
        c = d.models[1][0]
        c.read()
        assert (c.Mn.cvalue, c.Md.cvalue, c.Vr.cvalue) == ("Acme Solar", "AS-30", "2.7.1")
        assert c.SN.cvalue.startswith("AS") and len(c.SN.cvalue) == 10
        assert c.SN.cvalue != host.devices["pv/0"].image.identity["serial"]
        m = d.models[701][0]
        m.read()
        assert m.TotWhInj.cvalue is not None and m.TotWhInj.cvalue > 1e6  # years of output, not 0
        assert m.Hz.cvalue != 50.0 and abs(m.Hz.cvalue - 50.0) < 0.05
    finally:
        d.close()
    with socket.create_connection(("127.0.0.1", eps["pv/1"]["port"]), timeout=10) as s:
        r = ask(s, bytes([0x2B, 0x0E, 1, 0]))
        assert b"Acme Solar" in r and b"AS-30" in r and b"2.7.1" in r


def test_refresh_period_and_connection_limit(rig):
    twin, host, eps = rig
    dev = host.devices["pv/0"]
    a = dev.image.by_name["701.Hz"].address
    with socket.create_connection(("127.0.0.1", eps["pv/0"]["port"]), timeout=10) as s:
        def hz():
            return ask(s, struct.pack(">BHH", 3, a, 2))[2:6]  # 701 Hz: uint32
        t = twin.t_s
        host.step(5 * (t // 5 + 1) + 1)  # into the next 5 s refresh period
        first = hz()
        host.step(twin.t_s + 2)  # same period: the device has not refreshed yet
        assert hz() == first
        host.step(twin.t_s + 5)
        assert hz() != first
        # one connection at a time: a second is closed at once
        with socket.create_connection(("127.0.0.1", eps["pv/0"]["port"]), timeout=10) as s2:
            try:
                s2.sendall(struct.pack(">HHHBBHH", 1, 0, 6, 1, 3, a, 1))
                assert s2.recv(16) == b""  # closed (FIN) ...
            except ConnectionResetError:
                pass  # ... or reset: either way no answer
        assert hz()  # the first connection still serves


def test_busy_answer_to_requests_too_close(rig):
    twin, host, eps = rig
    with socket.create_connection(("127.0.0.1", eps["bat/0"]["port"]), timeout=10) as s:
        assert ask(s, struct.pack(">BHH", 3, 40000, 2))[0] == 3
        assert ask(s, struct.pack(">BHH", 3, 40000, 2), tid=2) == bytes([0x83, 6])  # server busy


def test_head_meter_emulation_comes_from_the_scenario():
    """The head meter is no fleet group: `head_meter.emulation` in the scenario sets what a
    client sees of it (identity by Modbus device identification, exact readings here)."""
    s = Scenario.model_validate(dict(
        name="meter", start="2026-06-21T11:00:00Z", duration_s=600, seed=3, feeder={"kind": "cigre_lv"},
        head_meter={"emulation": {"manufacturer": "Grid Meters", "model": "GM-3", "noise_p_pct": 0}},
        outputs={"report": False}))
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False)
    try:
        eps = {e["device_id"]: e for e in host.start()}
        host.step(60)
        assert host.devices["meter/head"].noise[0] == 0.0
        with socket.create_connection(("127.0.0.1", eps["meter/head"]["port"]), timeout=10) as sock:
            r = ask(sock, bytes([0x2B, 0x0E, 1, 0]))
            assert b"Grid Meters" in r and b"GM-3" in r
    finally:
        host.stop()
