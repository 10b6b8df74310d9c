"""Modbus/TCP conformance of the emulated SunSpec devices, seen by independent peers: libmodbus's
`mbpoll` and a raw-socket client (no pymodbus on this side). Issue 13 items 1, 2, 3, 6, 7, 8."""

import shutil
import socket
import struct
import subprocess
import time

import pytest
from emulation import exact
from modbus_raw import Raw, read, write_multi

from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin

MBPOLL = shutil.which("mbpoll")


@pytest.fixture(scope="module")
def rig():
    s = Scenario.model_validate(dict(
        name="conf", start="2026-06-21T11:00:00Z", duration_s=600, seed=4, feeder={"kind": "cigre_lv"},
        fleet=exact([{"name": "pv", "kind": "pv", "count": 1, "params": {"p_peak_kw": 40, "s_rated_kva": 40}},
                     {"name": "bat", "kind": "battery", "count": 1, "params": {"p_max_kw": 8, "e_cap_kwh": 20}}]),
        outputs={"report": False}))
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False, meter=False, idle_timeout_s=3.0)
    eps = {e["device_id"]: e for e in host.start()}
    host.step(60)
    yield twin, host, eps
    host.stop()


@pytest.fixture
def pv(rig):
    twin, host, eps = rig
    c = Raw(eps["pv/0"]["port"])
    yield c, host.devices["pv/0"].image
    c.close()


def test_counts_and_function_codes(pv):
    c, img = pv
    assert c.ask(read(40000, 2)) == bytes([3, 4, 0x53, 0x75, 0x6E, 0x53])  # 'SunS'
    assert len(c.ask(read(40000, 125))) == 2 + 250
    for n in (0, 126, 0xFFFF):
        assert c.ask(read(40000, n)) == bytes([0x83, 3]), n
    assert c.ask(read(30000, 1)) == bytes([0x83, 2])
    # only what a SunSpec device implements: 03, 06, 16, 0x2B/0x0E; the rest 01
    for fc in (1, 2, 4, 5, 7, 8, 11, 12, 15, 17, 20, 21, 22, 23, 24, 0x41, 0x7F):
        pdu = bytes([fc, 0, 0, 0, 1]) if fc not in (7, 11, 12, 17) else bytes([fc])
        assert c.ask(pdu) == bytes([fc | 0x80, 1]), fc


def test_device_identification_basic_objects(pv):
    c, img = pv
    r = c.ask(bytes([0x2B, 0x0E, 1, 0]))
    assert r[:3] == bytes([0x2B, 0x0E, 1]) and r[6] == 3
    objs, pos = {}, 7
    for _ in range(r[6]):
        oid, n = r[pos], r[pos + 1]
        objs[oid] = r[pos + 2:pos + 2 + n].decode()
        pos += 2 + n
    assert set(objs) == {0, 1, 2} and all(objs.values())
    assert objs[0] == str(img.by_name["1.Mn"].value)
    assert c.ask(bytes([0x2B, 0x0E, 4, 0x7F])) == bytes([0xAB, 2])  # no such object
    assert c.ask(bytes([0x2B, 0x0E, 9, 0])) == bytes([0xAB, 3])


def test_unit_ids_not_served(pv):
    c, img = pv
    for unit in (2, 247, 255):
        assert c.ask(read(40000, 2), unit=unit) == bytes([0x83, 0x0B]), unit
    c.s.sendall(c.adu(read(40000, 2), unit=0))  # broadcast: no answer ...
    assert c.recv(timeout_s=1.0) is None
    assert c.ask(read(40000, 2)) is not None  # ... and the connection still serves


def test_pipelined_requests_and_framing_errors(rig, pv):
    c, img = pv
    c.s.sendall(c.adu(read(40000, 2)) + c.adu(read(40002, 2)) + c.adu(read(40000, 1)))  # one segment
    got = [c.recv() for _ in range(3)]
    assert [g[0] for g in got] == [c.tid - 2, c.tid - 1, c.tid]
    assert got[2][2] == bytes([3, 2, 0x53, 0x75])
    c.s.sendall(struct.pack(">HHHB", 9, 7, 6, 1) + read(40000, 1))  # protocol id 7: bad header
    with pytest.raises(ConnectionResetError):
        c.recv(timeout_s=10.0)
    twin, host, eps = rig
    idle = Raw(eps["pv/0"]["port"])  # idle_timeout_s = 3 in this rig
    try:
        with pytest.raises(ConnectionResetError):
            idle.recv(timeout_s=15.0)
    finally:
        idle.close()


def test_writes_over_headers_or_read_only_registers_refused_whole(rig, pv):
    c, img = pv
    twin, host, eps = rig
    hdr = img.by_name["704.PFWInjEna"].address - 2  # model 704's ID register
    before = c.ask(read(hdr, 4))
    assert c.ask(write_multi(hdr, [65535, 0, 0])) == bytes([0x90, 2])
    ena = img.by_name["704.WMaxLimPctEna"].address
    w_ro = img.by_name["103.W"].address
    assert c.ask(write_multi(ena - 1, [0, 1])) == bytes([0x90, 2])  # spans a read-only neighbour
    assert c.ask(struct.pack(">BHH", 6, w_ro, 5)) == bytes([0x86, 2])
    assert c.ask(read(hdr, 4)) == before
    assert c.ask(read(ena, 1))[2:] == b"\0\0"


def test_ranges_and_enums_from_the_model_definitions(rig, pv):
    c, img = pv
    twin, host, eps = rig
    f = twin.fleets["pv"]
    pct = img.by_name["123.WMaxLimPct"].address  # SF -1: raw 1500 = 150 %
    ena = img.by_name["123.WMaxLim_Ena"].address
    assert c.ask(struct.pack(">BHH", 6, pct, 1500)) == bytes([0x86, 3])
    assert c.ask(struct.pack(">BHH", 6, pct, 65535)) == bytes([0x86, 3])
    assert c.ask(struct.pack(">BHH", 6, ena, 7)) == bytes([0x86, 3])
    pf = img.by_name["123.OutPFSet"].address
    assert c.ask(struct.pack(">BHH", 6, pf, 0)) == bytes([0x86, 3])  # PF 0 while disabled too
    assert c.ask(struct.pack(">BHH", 6, pct, 500))[0] == 6  # 50 %, enabled next: curtails
    assert c.ask(struct.pack(">BHH", 6, ena, 1))[0] == 6
    assert f.p_limit_pct[0] == pytest.approx(50.0)
    conn = img.by_name["123.Conn"].address  # SunSpec marks Conn writable: DISCONNECT stops output
    assert c.ask(struct.pack(">BHH", 6, conn, 0))[0] == 6
    assert f.p_limit_pct[0] == pytest.approx(0.0)
    assert c.ask(struct.pack(">BHH", 6, conn, 1))[0] == 6
    assert c.ask(struct.pack(">BHH", 6, ena, 0))[0] == 6
    assert f.p_limit_pct[0] == pytest.approx(100.0)


@pytest.mark.skipif(MBPOLL is None, reason="mbpoll (Debian package) not installed")
def test_mbpoll_reads_and_sees_standard_exceptions(rig):
    twin, host, eps = rig
    port = str(eps["bat/0"]["port"])

    def mb(*args):
        return subprocess.run([MBPOLL, "-m", "tcp", "-p", port, "-0", "-1", "-o", "3", *args, "127.0.0.1"],
                              capture_output=True, text=True, timeout=60)

    r = mb("-a", "1", "-r", "40000", "-c", "2", "-t", "4:hex")
    assert "[40000]: \t0x5375" in r.stdout.replace("  ", "\t") or "0x5375" in r.stdout, r.stdout + r.stderr
    r = mb("-a", "1", "-r", "40000", "-c", "125")
    assert r.returncode == 0 and r.stdout.count("[4") == 125
    r = mb("-a", "2", "-r", "40000", "-c", "2")
    assert "Target device failed to respond" in r.stdout + r.stderr  # libmodbus text for 0x0B
    r = mb("-a", "1", "-r", "0", "-t", "0")  # coils: not a SunSpec function
    assert "Illegal function" in r.stdout + r.stderr
    r = mb("-a", "1", "-r", "30000", "-c", "2")
    assert "Illegal data address" in r.stdout + r.stderr
