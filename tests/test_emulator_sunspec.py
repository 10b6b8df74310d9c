"""Emulated SunSpec devices seen by a third-party client (pysunspec2) over TCP on 127.0.0.1:
models and values match the twin, a WMaxLimPct write curtails the PV, battery setpoints work,
out-of-range writes get exception 03, unknown registers 02."""

import numpy as np
import pytest
from emulation import exact, started_rig
from pymodbus.client import ModbusTcpClient
from sunspec2.modbus.client import SunSpecModbusClientDeviceTCP

from device_emulators import EmulatorHost
from scenarios.model import Scenario
from twin.simulation import Twin


def scenario(**kw):
    """Exact emulation (no noise, setpoints at once): these tests compare register values."""
    data = dict(name="emu", start="2026-06-21T11:00:00Z", duration_s=600, seed=4, feeder={"kind": "cigre_lv"},
                fleet=[{"name": "pv", "kind": "pv", "count": 3, "params": {"p_peak_kw": 40, "s_rated_kva": 40}},
                       {"name": "bat", "kind": "battery", "count": 2, "params": {"p_max_kw": 8, "e_cap_kwh": 20}},
                       {"name": "ev", "kind": "ev", "count": 2, "params": {"arrival_h_mean": 10.0}}],
                outputs={"report": False})
    data.update(kw)
    data["fleet"] = exact(data["fleet"])
    return Scenario.model_validate(data)


@pytest.fixture(scope="module")
def rig():
    yield from started_rig(scenario())


def sunspec(ep):
    d = SunSpecModbusClientDeviceTCP(slave_id=ep["unit"], ipaddr=ep["host"], ipport=ep["port"], timeout=3)
    d.scan()
    return d


def test_pv_models_and_values_match_twin(rig):
    twin, host, eps = rig
    d = sunspec(eps["pv/1"])
    try:
        assert {1, 103, 120, 123} <= {k for k in d.models if isinstance(k, int)}
        common = d.models[1][0]
        common.read()
        # identity of a product line, a distinct seeded serial per device (issue 13 item 10)
        assert common.Mn.cvalue == "Solvanta" and common.SN.cvalue.startswith("SVT")
        assert common.SN.cvalue != host.devices["pv/0"].image.identity["serial"]
        inv = d.models[103][0]
        inv.read()
        pv = twin.fleets["pv"]
        sf = 10 ** inv.W_SF.cvalue if inv.W_SF.cvalue else 1
        assert inv.W.cvalue == pytest.approx(-pv.p_kw[1] * 1000, abs=sf)  # within scale resolution
        assert inv.W.cvalue > 1000  # noon: really generating
        name = d.models[120][0]
        name.read()
        assert name.WRtg.cvalue == pytest.approx(40_000, abs=1)
    finally:
        d.close()


def test_wmaxlimpct_write_curtails_pv(rig):
    twin, host, eps = rig
    d = sunspec(eps["pv/0"])
    try:
        ctl = d.models[123][0]
        ctl.read()
        ctl.WMaxLimPct.cvalue = 25
        ctl.WMaxLim_Ena.cvalue = 1
        ctl.write()
        pv = twin.fleets["pv"]
        assert pv.p_limit_pct[0] == pytest.approx(25.0)
        host.step(twin.t_s + 2)
        assert -pv.p_kw[0] <= 0.25 * 40 + 1e-6 < pv.p_avail_kw[0]  # curtailed below what is available
        inv = d.models[103][0]
        inv.read()
        assert inv.W.cvalue == pytest.approx(-pv.p_kw[0] * 1000, abs=10 ** max(inv.W_SF.cvalue, 0))
        ctl.WMaxLim_Ena.cvalue = 0  # disable: the limit is lifted
        ctl.write()
        assert pv.p_limit_pct[0] == 100.0
    finally:
        d.close()


def test_battery_storage_controls_and_limits(rig):
    twin, host, eps = rig
    d = sunspec(eps["bat/1"])
    bat = twin.fleets["bat"]
    try:
        st = d.models[124][0]
        st.read()
        assert st.WChaMax.cvalue == pytest.approx(8000, abs=1)
        st.StorCtl_Mod.cvalue = 2  # discharge
        st.OutWRte.cvalue = 50.0
        st.write()
        assert bat.p_set_kw[1] == pytest.approx(-4.0)
        host.step(twin.t_s + 5)
        st.read()
        assert st.ChaState.cvalue == pytest.approx(bat.soc_pct[1], abs=0.1)
    finally:
        d.close()
    ep = eps["bat/1"]
    c = ModbusTcpClient(ep["host"], port=ep["port"], timeout=3)
    assert c.connect()
    try:
        base = host.devices["bat/1"].image.by_name["124.OutWRte"].address
        r = c.write_register(base, 2000, device_id=ep["unit"])  # 200 %: out of the device's range
        assert r.isError() and r.exception_code == 3
        assert bat.p_set_kw[1] == pytest.approx(-4.0)  # state untouched
        ro = host.devices["bat/1"].image.by_name["124.ChaState"].address
        r = c.write_register(ro, 1, device_id=ep["unit"])
        assert r.isError() and r.exception_code == 2  # read-only register
        r = c.read_holding_registers(30000, count=2, device_id=ep["unit"])
        assert r.isError() and r.exception_code == 2  # outside the map
    finally:
        c.close()


def test_ev_charger_custom_map(rig):
    twin, host, eps = rig
    ep = eps["ev/0"]
    c = ModbusTcpClient(ep["host"], port=ep["port"], timeout=3)
    assert c.connect()
    try:
        assert not c.write_register(1004, 350, device_id=ep["unit"]).isError()  # 3.5 kW cap
        assert twin.fleets["ev"].p_max_set_kw[0] == pytest.approx(3.5)
        r = c.read_holding_registers(1000, count=5, device_id=ep["unit"])
        assert r.registers[4] == 350
        host.step(twin.t_s + 2)
        r = c.read_holding_registers(1000, count=1, device_id=ep["unit"])
        assert r.registers[0] / 100 == pytest.approx(twin.fleets["ev"].p_kw[0], abs=0.01)
        assert twin.fleets["ev"].p_kw[0] <= 3.5 + 1e-9
    finally:
        c.close()


def test_meter_reads_feeder_head(rig):
    twin, host, eps = rig
    d = sunspec(eps["meter/head"])
    try:
        m = d.models[203][0]
        m.read()
        res = twin.grid.result
        res_w = (res.p_head_kw + host.der_since_pf()[0]) * 1000  # the head follows DER every step
        assert m.W.cvalue == pytest.approx(res_w, abs=10 ** max(m.W_SF.cvalue, 0))
        assert np.sign(m.W.cvalue) == np.sign(res_w)
    finally:
        d.close()


def test_500_devices_start_on_loopback():
    s = scenario(fleet=[{"name": "pv", "kind": "pv", "count": 300}, {"name": "bat", "kind": "battery", "count": 200}])
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False, meter=False)
    try:
        eps = host.start()
        assert len(eps) == 500 and len({e["port"] for e in eps}) == 500
        print(f"500 devices started in {host.start_s:.2f} s")
        last = eps[-1]
        c = ModbusTcpClient(last["host"], port=last["port"], timeout=3)
        assert c.connect()
        r = c.read_holding_registers(40000, count=2, device_id=last["unit"])
        assert r.registers == [0x5375, 0x6E53]
        c.close()
    finally:
        host.stop()


def test_gateway_serves_many_unit_ids():
    s = scenario(fleet=[{"name": "pv", "kind": "pv", "count": 20, "gateway": True}])
    twin = Twin(s)
    host = EmulatorHost(twin, rtu=False, meter=False)
    try:
        eps = host.start()
        assert len({e["port"] for e in eps}) == 1 and sorted(e["unit"] for e in eps) == list(range(1, 21))
        host.step(60)
        e = eps[7]
        d = sunspec(e)
        d.models[1][0].read()
        assert d.models[1][0].SN.cvalue == host.devices[e["device_id"]].image.identity["serial"]
        d.close()
    finally:
        host.stop()


def test_der_models_701_704_and_nameplate_match_twin(rig):
    twin, host, eps = rig
    d = sunspec(eps["pv/2"])
    pv = twin.fleets["pv"]
    try:
        assert {1, 103, 120, 121, 123, 701, 704} <= set(d.models)
        m701, m103, m121 = d.models[701][0], d.models[103][0], d.models[121][0]
        for m in (m701, m103, m121):
            m.read()
        res = 10.0 ** m701.W_SF.cvalue
        assert m701.W.cvalue == pytest.approx(-pv.p_kw[2] * 1000, abs=res) and m701.W.cvalue > 1000
        assert m701.St.cvalue == 1 and m701.ConnSt.cvalue == 1
        vn_v = twin.net.bus.vn_kv.at[int(pv.bus[2])] * 1000
        v_pu = host.v_bus.at(twin.pf.bus_position(int(pv.bus[2])), twin.t_s)  # between power flows
        assert m701.LNV.cvalue == pytest.approx(v_pu * vn_v / 3**0.5, abs=10.0 ** m701.V_SF.cvalue)
        assert m701.LLV.cvalue == pytest.approx(v_pu * vn_v, abs=10.0 ** m701.V_SF.cvalue)
        assert m121.WMax.cvalue == pytest.approx(40_000, abs=1)
        assert m121.VArMaxQ1.cvalue == pytest.approx(pv.q_max_kvar[2] * 1000, abs=10.0 ** m121.VArMax_SF.cvalue)
        # 704: a second WMaxLimPct; with 123 disabled it alone limits output
        c = d.models[704][0]
        c.read()
        c.WMaxLimPct.cvalue = 40
        c.WMaxLimPctEna.cvalue = 1
        c.write()
        assert pv.p_limit_pct[2] == pytest.approx(40.0)
        c.WMaxLimPctEna.cvalue = 0
        c.write()
        assert pv.p_limit_pct[2] == 100.0
    finally:
        d.close()


def test_constant_power_factor_follows_active_power(rig):
    twin, host, eps = rig
    d = sunspec(eps["pv/1"])
    pv = twin.fleets["pv"]
    try:
        ctl = d.models[123][0]
        ctl.read()
        ctl.OutPFSet.cvalue = -0.9  # under-excited: the inverter absorbs VAr
        ctl.OutPFSet_Ena.cvalue = 1
        ctl.write()
        host.step(twin.t_s + 2)
        host.step(twin.t_s + 2)  # q follows the P of the previous step
        p_gen = -pv.p_kw[1]
        assert p_gen > 1.0
        assert pv.q_kvar[1] == pytest.approx(p_gen * np.tan(np.arccos(0.9)), rel=0.02)  # absorbing: q > 0
        ctl.WMaxLimPct.cvalue = 30
        ctl.WMaxLim_Ena.cvalue = 1
        ctl.write()
        host.step(twin.t_s + 2)
        host.step(twin.t_s + 2)
        assert -pv.p_kw[1] <= 0.3 * 40 + 1e-6
        assert pv.q_kvar[1] == pytest.approx(-pv.p_kw[1] * np.tan(np.arccos(0.9)), rel=0.02)  # tracked
        inv = d.models[103][0]
        inv.read()
        assert inv.PF.cvalue == pytest.approx(-90, abs=1)  # published PF: absorbing is negative
        ctl.OutPFSet_Ena.cvalue = 0
        ctl.WMaxLim_Ena.cvalue = 0
        ctl.write()
        host.step(twin.t_s + 2)
        assert pv.q_set_kvar[1] == 0.0 and pv.p_limit_pct[1] == 100.0
    finally:
        d.close()


def test_fixed_var_and_battery_wset_limits(rig):
    twin, host, eps = rig
    pv, bat = twin.fleets["pv"], twin.fleets["bat"]
    ep = eps["pv/0"]
    c = ModbusTcpClient(ep["host"], port=ep["port"], timeout=3)
    assert c.connect()
    try:
        img = host.devices["pv/0"].image
        a = img.by_name["704.VarSetEna"].address
        # VarSetEna=1, VarSetMod=4 (VARS), VarSetPri=0, VarSet=5000 var (int32, SF 0): inject 5 kvar
        assert a + 2 == img.by_name["704.VarSet"].address - 1
        assert not c.write_registers(a, [1, 4, 0, 0, 5000], device_id=ep["unit"]).isError()
        assert pv.q_set_kvar[0] == pytest.approx(-5.0)
        r = c.write_registers(img.by_name["704.VarSet"].address, [0, 50000], device_id=ep["unit"])
        assert r.isError() and r.exception_code == 3  # 50 kvar > the inverter's 17.6 kvar
        assert pv.q_set_kvar[0] == pytest.approx(-5.0)
        assert not c.write_registers(a, [0], device_id=ep["unit"]).isError()
        assert pv.q_set_kvar[0] == 0.0
    finally:
        c.close()
    d = sunspec(eps["bat/0"])
    try:
        w = d.models[704][0]
        w.read()
        w.WSetMod.cvalue = 1
        w.WSet.cvalue = 3000  # discharge 3 kW
        w.WSetEna.cvalue = 1
        w.write()
        assert bat.p_set_kw[0] == pytest.approx(-3.0)
        w.WSetEna.cvalue = 0  # back to 124 (StorCtl_Mod 0: idle)
        w.write()
        assert bat.p_set_kw[0] == 0.0
    finally:
        d.close()


def test_meter_energy_registers_integrate_head_power(rig):
    twin, host, eps = rig
    d = sunspec(eps["meter/head"])
    try:
        m = d.models[203][0]
        m.read()
        before = m.TotWhImp.cvalue or 0
        expected_wh = 0.0
        for _ in range(30):
            host.step(twin.t_s + twin.dt_s)
            expected_wh += max(twin.grid.result.p_head_kw, 0.0) * twin.dt_s / 3.6
        m.read()
        assert expected_wh > 10
        assert m.TotWhImp.cvalue - before == pytest.approx(expected_wh, abs=1.5)  # register rounding
        vn_v = twin.net.bus.vn_kv.at[int(twin.net.ext_grid.bus.iloc[0])] * 1000
        assert m.PPV.cvalue == pytest.approx(vn_v * twin.grid.v_meas_pu[0], abs=10.0 ** m.V_SF.cvalue)
        assert m.PhV.cvalue == pytest.approx(m.PPV.cvalue / 3**0.5, abs=10.0 ** m.V_SF.cvalue)
    finally:
        d.close()


def test_power_factor_scaling_and_sign_conventions(rig):
    """Issue 13 items 4 and 9: 701 PF is |P|/S (not 32.767), signed like 701 W (> 0 injecting);
    the meter's 203 PF is signed like 203 W (> 0 importing)."""
    twin, host, eps = rig
    pv = twin.fleets["pv"]
    d = sunspec(eps["pv/0"])
    try:
        m = d.models[701][0]
        m.read()
        p, q = -pv.p_kw[0], -pv.q_kvar[0]
        assert m.PF.cvalue == pytest.approx(abs(p) / np.hypot(p, q), abs=2e-3) and m.PF.cvalue > 0
    finally:
        d.close()
    d = sunspec(eps["meter/head"])
    try:
        m = d.models[203][0]
        m.read()
        r = twin.grid.result
        dp, dq = host.der_since_pf()
        p, q = r.p_head_kw + dp, r.q_head_kvar + dq
        assert m.PF.cvalue == pytest.approx(100 * np.sign(p) * abs(p) / np.hypot(p, q), abs=1.0)
        assert np.sign(m.PF.cvalue) == np.sign(m.W.cvalue)
    finally:
        d.close()


def test_idle_battery_is_holding_and_standby(rig):
    """Issue 13 item 5: an idle battery between reserve and full reports ChaSt HOLDING (6) and
    103 St STANDBY (8), not EMPTY / MPPT."""
    twin, host, eps = rig
    bat = twin.fleets["bat"]
    bat.write("p_set_kw", 0, 0.0)
    host.step(twin.t_s + 2)
    assert bat.soc_min_kwh[0] < bat.soc_kwh[0] < bat.e_cap_kwh[0] and bat.p_kw[0] == 0
    d = sunspec(eps["bat/0"])
    try:
        s124, s103 = d.models[124][0], d.models[103][0]
        s124.read()
        s103.read()
        assert s124.ChaSt.cvalue == 6 and s103.St.cvalue == 8
    finally:
        d.close()
