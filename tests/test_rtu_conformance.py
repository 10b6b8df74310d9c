"""IEC 60870-5-104 command semantics of the feeder RTU, checked with a raw-socket client
(tests/iec104_raw.py, no c104): issue 13 items 12-16."""

import threading
import time

import pandapower as pp
import pytest
from iec104_raw import Raw104, interrogation, setpoint, single

from device_emulators.rtu import SHUNT_CMD, SWITCH, SWITCH_CMD, TAP, TAP_CMD, FeederRtu
from scenarios.model import Scenario
from twin.simulation import Twin

ACT, ACTCON, DEACT, DEACTCON, ACTTERM = 6, 7, 8, 9, 10


@pytest.fixture(scope="module")
def rtu():
    s = Scenario.model_validate(dict(
        name="rtu104", start="2026-06-21T11:00:00Z", duration_s=3600, seed=3,
        feeder={"kind": "cigre_mv", "with_der": False}, fleet=[], outputs={"report": False}))
    tw = Twin(s)
    t = tw.net.trafo  # transformer 0 gets an on-load tap changer, transformer 1 has none
    t.loc[t.index[0], ["tap_side", "tap_neutral", "tap_min", "tap_max", "tap_pos", "tap_step_percent",
                       "tap_changer_type"]] = ["hv", 0, -9, 9, 0, 1.5, "Ratio"]
    pp.create_shunt(tw.net, bus=int(tw.net.bus.index[5]), q_mvar=-0.2, p_mw=0.0, step=0, max_step=3)
    tw.pf.invalidate()
    tw.run_until(60)
    r = FeederRtu(tw, threading.RLock(), port=0, cycle_ms=600_000, select_timeout_s=2.0)
    r.start()
    yield r
    r.stop()


@pytest.fixture
def cl(rtu):
    c = Raw104(rtu.port)
    c.startdt()
    yield c
    c.close()


def replies(cl, asdu):
    cl.send(asdu)
    return [a for a in cl.asdus(quiet_s=0.6) if a.type_id in (45, 50, 46, 100)]


def first_reply(cl, asdu):
    """Send and return the first reply only (no quiet wait: a selection must stay live)."""
    cl.send(asdu)
    while True:
        kind, a = cl.recv(10.0)
        assert kind is not None, "no reply"
        if kind == "I":
            return a


def test_nan_setpoint_refused_and_point_stays_usable(rtu, cl):
    net = rtu.twin.net
    for v in (float("nan"), float("inf"), 1.5, 99.0):
        (a,) = replies(cl, setpoint(TAP_CMD, v))
        assert (a.cot, a.negative) == (ACTCON, True), v
    assert net.trafo.tap_pos.iloc[0] == 0
    (a,) = replies(cl, setpoint(TAP_CMD, 2.0))
    assert (a.cot, a.negative) == (ACTCON, False) and net.trafo.tap_pos.iloc[0] == 2
    for v in (float("nan"), -1.0, 0.5):
        (a,) = replies(cl, setpoint(SHUNT_CMD, v))
        assert a.negative, v
    (a,) = replies(cl, setpoint(SHUNT_CMD, 2.0))
    assert not a.negative and net.shunt.step.iloc[0] == 2


def test_select_before_operate(rtu, cl):
    net = rtu.twin.net
    k = 1
    before = bool(net.switch.closed.iloc[k])
    # select, never executed: confirmed, lapses after the select timeout without termination
    (a,) = replies(cl, single(SWITCH_CMD + k, not before, select=True))
    assert (a.cot, a.negative, a.objects[0][1][0] & 0x80) == (ACTCON, False, 0x80)
    time.sleep(2.5)
    assert not [x for x in cl.asdus(quiet_s=0.3, first_s=0.3) if x.cot == ACTTERM]
    assert bool(net.switch.closed.iloc[k]) is before
    (a,) = replies(cl, single(SWITCH_CMD + k, not before))  # execute after the lapse: refused
    assert (a.cot, a.negative) == (ACTCON, True) and bool(net.switch.closed.iloc[k]) is before
    # execute without select: refused
    (a,) = replies(cl, single(SWITCH_CMD + k, not before))
    assert a.negative
    # select + execute: CON (S/E 1), CON then TERM (S/E 0) and the switch moved
    assert not first_reply(cl, single(SWITCH_CMD + k, not before, select=True)).negative
    got = replies(cl, single(SWITCH_CMD + k, not before))
    assert [(x.cot, x.negative, x.objects[0][1][0] & 0x80) for x in got] == [(ACTCON, False, 0), (ACTTERM, False, 0)]
    assert bool(net.switch.closed.iloc[k]) is (not before)
    # a select cancelled by deactivation: COT 9, and the execute is then refused
    assert not first_reply(cl, single(SWITCH_CMD + k, before, select=True)).negative
    (a,) = replies(cl, single(SWITCH_CMD + k, before, select=True, cot=DEACT))
    assert (a.cot, a.negative) == (DEACTCON, False)
    (a,) = replies(cl, single(SWITCH_CMD + k, before))
    assert a.negative and bool(net.switch.closed.iloc[k]) is (not before)


def test_only_activation_and_deactivation_are_commands(rtu, cl):
    net = rtu.twin.net
    k = 2
    before = bool(net.switch.closed.iloc[k])
    (a,) = replies(cl, single(SWITCH_CMD + k, not before, select=True, cot=3))  # spontaneous
    assert (a.cot, a.negative) == (45, True)
    (a,) = replies(cl, single(SWITCH_CMD + k, not before, cot=3))
    assert (a.cot, a.negative) == (45, True)
    (a,) = replies(cl, setpoint(TAP_CMD, 1.0, cot=3))
    assert (a.cot, a.negative) == (45, True)
    assert bool(net.switch.closed.iloc[k]) is before and net.trafo.tap_pos.iloc[0] != 1


def test_unknown_point_address_or_type_gets_one_negative_reply(rtu, cl):
    for asdu, cot in ((setpoint(7999, 1.0), 47), (setpoint(TAP_CMD + 1, 1.0), 47),  # trafo 1: no tap changer
                      (single(SWITCH_CMD, True, ca=7), 46), (bytes([46, 1, 6, 0, 1, 0, 0x70, 0x17, 0, 1]), 44)):
        cl.send(asdu)
        got = cl.asdus(quiet_s=1.0)
        assert [(a.cot, a.negative) for a in got] == [(cot, True)], asdu.hex()


def test_no_spontaneous_burst_no_cyclic_switch_states_no_phantom_taps(rtu):
    rtu = FeederRtu(rtu.twin, rtu.lock, port=0, cycle_ms=500)
    rtu.start()
    rtu.publish()  # nothing moved since start: nothing spontaneous
    cl = Raw104(rtu.port)
    try:
        cl.startdt()
        got = cl.asdus(quiet_s=1.5, first_s=1.5, max_s=2.0)  # cycle 0.5 s: periodic measured values only
        assert got and {(a.type_id, a.cot) for a in got} == {(13, 1)}
        cl.send(interrogation())
        gi = [a for a in cl.asdus(quiet_s=1.0, max_s=4.0) if a.cot != 1]
        ioas = {i for a in gi if a.cot == 20 for i in a.ioas}
        assert {SWITCH + k for k in range(len(rtu.twin.net.switch))} <= ioas
        assert TAP in ioas and TAP + 1 not in ioas
        assert (gi[0].type_id, gi[0].cot) == (100, ACTCON) and (gi[-1].type_id, gi[-1].cot) == (100, ACTTERM)
    finally:
        cl.close()
        rtu.stop()


@pytest.mark.parametrize("frame", [bytes([0x68, 4, 0x07, 0, 0, 1]), bytes([0x68, 5, 0x07, 0, 0, 0, 0]),
                                   bytes([0x68, 4, 0x0F, 0, 0, 0]), bytes([0x67, 4, 0x07, 0, 0, 0]),
                                   bytes([0x68, 2, 0x07, 0])])
def test_malformed_control_field_closes_the_link(rtu, frame):
    cl = Raw104(rtu.port)
    try:
        cl.raw(frame)
        assert cl.closed_within(10.0)
    finally:
        cl.close()
