"""Faults as a field client sees them, the IEC 104 RTU seen by a c104 client, and hostile
Modbus frames that must not crash a server or corrupt its state."""

import random
import socket
import time

import c104
import pytest
from pymodbus.client import ModbusTcpClient

from device_emulators import EmulatorHost
from device_emulators.faults import clear, inject
from scenarios.model import Scenario
from twin.simulation import Twin


@pytest.fixture(scope="module")
def rig():
    s = Scenario.model_validate(dict(
        name="faults", start="2026-06-21T11:00:00Z", duration_s=3600, seed=2,
        feeder={"kind": "simbench", "code": "1-MV-rural--0-sw", "with_der": False},
        fleet=[{"name": "bat", "kind": "battery", "count": 3, "params": {"p_max_kw": 10}}],
        outputs={"report": False}))
    twin = Twin(s)
    host = EmulatorHost(twin)
    eps = {e["device_id"]: e for e in host.start()}
    host.step(60)
    yield twin, host, eps
    host.stop()


def client(ep, timeout=1.0):
    c = ModbusTcpClient(ep["host"], port=ep["port"], timeout=timeout, retries=0)
    assert c.connect()
    return c


def soc_reg(host, dev):
    return host.devices[dev].image.by_name["124.ChaState"].address


def test_exception_latency_drop_and_recovery(rig):
    twin, host, eps = rig
    ep, a = eps["bat/0"], soc_reg(host, "bat/0")
    c = client(ep)
    try:
        inject(host, "exception", "bat:0", 4)
        r = c.read_holding_registers(a, count=1, device_id=ep["unit"])
        assert r.isError() and r.exception_code == 4
        clear(host, "exception", "bat:0")
        inject(host, "latency", "bat:0", 0.4)
        t = time.perf_counter()
        assert not c.read_holding_registers(a, count=1, device_id=ep["unit"]).isError()
        assert time.perf_counter() - t >= 0.35
        clear(host, "latency", "bat:0")
        inject(host, "drop", "bat:0")
        with pytest.raises(Exception):  # the field client's view: a timeout
            rr = c.read_holding_registers(a, count=1, device_id=ep["unit"])
            if rr.isError():
                raise OSError("no answer")
    finally:
        c.close()
    clear(host, "drop", "bat:0")
    c = client(ep)
    try:
        assert not c.read_holding_registers(a, count=1, device_id=ep["unit"]).isError()  # back
    finally:
        c.close()
    kinds = [e["fault"] for e in twin.events.of_kind("fault_start")]
    assert kinds == ["exception", "latency", "drop"] and len(twin.events.of_kind("fault_end")) == 3


def test_freeze_gives_stale_values_and_wrong_scale_misreads(rig):
    twin, host, eps = rig
    ep, a = eps["bat/1"], soc_reg(host, "bat/1")
    twin.fleets["bat"].write("p_set_kw", 1, 10.0)  # charging: SOC moves
    c = client(ep)
    try:
        inject(host, "freeze", "bat:1")
        before = c.read_holding_registers(a, count=1, device_id=ep["unit"]).registers[0]
        host.step(twin.t_s + 600)
        assert c.read_holding_registers(a, count=1, device_id=ep["unit"]).registers[0] == before  # stale
        clear(host, "freeze", "bat:1")
        fresh = c.read_holding_registers(a, count=1, device_id=ep["unit"]).registers[0]
        assert fresh > before
        inject(host, "wrong_scale", "bat:1", 1)
        wrong = c.read_holding_registers(a, count=1, device_id=ep["unit"]).registers[0]
        assert wrong == pytest.approx(fresh * 10, abs=10)  # published one decade off its SF
    finally:
        c.close()


def test_refuse_and_reset_are_seen_as_connection_faults(rig):
    twin, host, eps = rig
    ep = eps["bat/2"]
    inject(host, "refuse", "bat:2")
    time.sleep(0.3)
    with socket.socket() as s:
        s.settimeout(1.0)
        assert s.connect_ex((ep["host"], ep["port"])) != 0  # connection refused
    clear(host, "refuse", "bat:2")
    time.sleep(0.3)
    c = client(ep)
    inject(host, "reset", "bat:2")
    time.sleep(0.3)
    r = None
    try:
        r = c.read_holding_registers(40000, count=2, device_id=ep["unit"])
    except Exception:
        pass
    assert r is None or r.isError()  # the old connection is gone
    c.close()
    c = client(ep)
    assert c.read_holding_registers(40000, count=2, device_id=ep["unit"]).registers == [0x5375, 0x6E53]
    c.close()


def test_hostile_frames_do_not_crash_or_corrupt(rig):
    twin, host, eps = rig
    ep = eps["bat/0"]
    regs_before = list(host.devices["bat/0"].image.regs)
    setp_before = twin.fleets["bat"].p_set_kw.copy()
    rng = random.Random(7)
    frames = [bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) for _ in range(40)]
    frames += [b"\x00\x01\x00\x00\x00\x06\x01\x03\x9c\x40\xff\xff",  # huge count
               b"\x00\x02\x00\x00\x00\xff\x01\x10\x9c\x40\x00\x7d\xfa",  # length lies
               b"\x00\x03\x00\x00\x00\x02\x01",  # truncated
               b"\x00\x04\x00\x00\x00\x06\x01\x2b\x0e\x01\x00\x00"]  # unsupported function
    ctl = host.devices["bat/0"].image.by_name["124.StorCtl_Mod"]
    hi, lo = ctl.address >> 8, ctl.address & 0xFF
    frames += [bytes([0, 5, 0, 0, 0, 9, 1, 0x10, hi, lo, 0, 1, 0xFA, 0, 3]),  # byte count lies
               bytes([0, 6, 0, 0, 0, 9, 1, 0x10, hi, lo, 0x7F, 0xFF, 2, 0, 3]),  # 32767 registers
               bytes([0, 7, 0, 0, 0, 5, 1, 0x06, hi, lo, 0]),  # single write, value cut short
               bytes([0, 8, 0, 0, 0xFF, 0xFF, 1, 0x10, hi, lo, 0, 1, 2, 0, 3])]  # MBAP length 65535
    for f in frames:
        with socket.socket() as s:
            s.settimeout(0.15)
            s.connect((ep["host"], ep["port"]))
            s.sendall(f)
            try:
                s.recv(512)
            except (TimeoutError, ConnectionResetError):
                pass
    assert twin.fleets["bat"].p_set_kw.tolist() == setp_before.tolist()
    c = client(ep)
    try:
        r = c.read_holding_registers(40000, count=2, device_id=ep["unit"])
        assert r.registers == [0x5375, 0x6E53]
    finally:
        c.close()
    img = host.devices["bat/0"].image
    assert img.regs[:2] == regs_before[:2] and img.raw(ctl) == 0  # no half-applied write
    for b in img.bindings:  # every setpoint register as it was before the attack
        if b.writable:
            i = b.address - img.base
            assert img.regs[i:i + b.point.size] == regs_before[i:i + b.point.size], b.point.name


def test_rtu_interrogation_spontaneous_update_and_commands(rig):
    twin, host, eps = rig
    ep = eps["rtu"]
    cl = c104.Client(tick_rate_ms=50, command_timeout_ms=3000)
    conn = cl.add_connection(ip=ep["host"], port=ep["port"], init=c104.Init.ALL)
    st = conn.add_station(common_address=ep["unit"])
    n_bus = len(twin.net.bus)
    v_pts = [st.add_point(io_address=1000 + k, type=c104.Type.M_ME_NC_1) for k in range(n_bus)]
    p_head = st.add_point(io_address=4000, type=c104.Type.M_ME_NC_1)
    tap_cmd = st.add_point(io_address=7000, type=c104.Type.C_SE_NC_1)
    cl.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not conn.is_connected:
            time.sleep(0.05)
        if conn.state == c104.ConnectionState.OPEN_MUTED:
            conn.unmute()
        assert conn.interrogation(common_address=ep["unit"], cause=c104.Cot.ACTIVATION,
                                  qualifier=c104.Qoi.STATION, wait_for_response=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(p.value for p in v_pts):
            time.sleep(0.05)
        v_true = twin.grid.v_meas_pu
        assert [round(p.value, 4) for p in v_pts] == pytest.approx(list(v_true), abs=1e-4)  # all buses
        assert p_head.value == pytest.approx(twin.grid.result.p_head_kw, rel=1e-5)
        # spontaneous: raise the load, step the twin, the head value arrives unasked
        old = p_head.value
        twin.fleets["bat"].write("p_set_kw", slice(None), 10.0)
        twin.scenario.feeder.base_load_scale = 1.5
        host.step(twin.t_s + 120)
        deadline = time.monotonic() + 5  # the RTU reports every power flow: wait for the last one
        final = twin.grid.result.p_head_kw
        while time.monotonic() < deadline and p_head.value != pytest.approx(final, rel=1e-5):
            time.sleep(0.05)
        assert p_head.value == pytest.approx(twin.grid.result.p_head_kw, rel=1e-5) and p_head.value != old
        # setpoint command: the feeder-head transformer's tap moves in the twin
        tap_cmd.value = 2.0
        assert tap_cmd.transmit(cause=c104.Cot.ACTIVATION)
        assert twin.net.trafo.tap_pos.iloc[0] == 2.0
        tap_cmd.value = 99.0  # outside tap_min..tap_max: refused, twin unchanged
        assert not tap_cmd.transmit(cause=c104.Cot.ACTIVATION)
        assert twin.net.trafo.tap_pos.iloc[0] == 2.0
    finally:
        cl.stop()


def test_iec104_link_loss_and_invalid_quality(rig):
    from controller.clock import SteppedClock
    from controller.links.base import Quality
    from controller.links.iec104 import Iec104Link

    twin, host, eps = rig
    link = Iec104Link.from_endpoints([eps["rtu"]], SteppedClock(0))
    try:
        vals = link.read()["rtu"]
        assert vals["v_pu.1"].quality == Quality.GOOD
        inject(host, "iec104_invalid", "rtu")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and link.read()["rtu"]["v_pu.1"].quality != Quality.INVALID:
            time.sleep(0.1)
        assert link.read()["rtu"]["v_pu.1"].quality == Quality.INVALID
        clear(host, "iec104_invalid", "rtu")
        inject(host, "iec104_link_loss", "rtu")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and link.status()["rtu"].available:
            link.read()
            time.sleep(0.1)
        assert not link.status()["rtu"].available
        assert link.read()["rtu"]["v_pu.1"].quality == Quality.MISSING
        clear(host, "iec104_link_loss", "rtu")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not link.status()["rtu"].available:
            link.read()
            time.sleep(0.2)
        assert link.status()["rtu"].available  # reconnected by itself
    finally:
        link.close()


def test_scenario_faults_follow_twin_time():
    s = Scenario.model_validate(dict(
        name="sched", start="2026-06-21T11:00:00Z", duration_s=600, seed=2, feeder={"kind": "cigre_lv"},
        fleet=[{"name": "bat", "kind": "battery", "count": 2, "params": {"p_max_kw": 10}}],
        faults=[{"at_s": 30, "duration_s": 60, "kind": "exception", "target": "bat:0", "value": 6},
                {"at_s": 30, "duration_s": 60, "kind": "freeze", "target": "bat"}],
        outputs={"report": False}))
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False, meter=False)
    eps = {e["device_id"]: e for e in host.start()}
    twin.fleets["bat"].write("p_set_kw", 1, 10.0)
    try:
        a = soc_reg(host, "bat/1")
        c0, c1 = client(eps["bat/0"]), client(eps["bat/1"])
        host.step(20)
        assert not c0.read_holding_registers(a, count=1, device_id=1).isError()
        host.step(40)  # inside the window: bat/0 busy (exception 6), bat/1 frozen
        r = c0.read_holding_registers(a, count=1, device_id=1)
        assert r.isError() and r.exception_code == 6
        frozen = c1.read_holding_registers(a, count=1, device_id=1).registers[0]
        host.step(85)
        assert c1.read_holding_registers(a, count=1, device_id=1).registers[0] == frozen
        host.step(100)  # window over: answers again, values move
        assert not c0.read_holding_registers(a, count=1, device_id=1).isError()
        assert c1.read_holding_registers(a, count=1, device_id=1).registers[0] > frozen
        c0.close()
        c1.close()
        starts, ends = twin.events.of_kind("fault_start"), twin.events.of_kind("fault_end")
        assert sorted((e["fault"], e["target"]) for e in starts) == [("exception", "bat:0"), ("freeze", "bat")]
        assert [e["t_s"] for e in starts] == [30, 30] and [e["t_s"] for e in ends] == [90, 90]
    finally:
        host.stop()
