"""Volt/VAR steps over the real IEC 104 RTU: the same evening LV feeder as
test_controller_voltvar_steps (OLTC on the transformer, a capacitor bank at the far end), its
RTU served by the emulator outstation (device_emulators.rtu.FeederRtu, IEC 60870-5-104 on
127.0.0.1) and read by the controller's Iec104Link; fleet and head meter in process. The
controller's capacitor and tap steps travel as C_SE_NC_1 setpoint commands, the RTU confirms
them, moves the twin's capacitor and tap, and reports the new positions back; the far end
returns into the band."""

import warnings

import numpy as np
import pytest
from polling import wait as wait_for
from test_controller_voltvar_steps import LIMITS, oltc_feeder

from controller.assembly import Spec, assemble
from controller.clock import SteppedClock
from controller.links.direct import DirectLink
from controller.links.iec104 import Iec104Link
from device_emulators import EmulatorHost
from hil.direct import TwinPort, feeder_model
from scenarios.model import Scenario
from twin.simulation import Twin


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    path = tmp_path_factory.mktemp("oltc104") / "oltc_feeder.json"
    oltc_feeder(path)
    s = Scenario.model_validate(dict(
        name="oltc_iec104", start="2026-01-15T17:00:00Z", duration_s=900, seed=3, device_step_s=60,
        power_flow_interval_s=60,
        feeder={"kind": "pandapower_json", "path": str(path), "limits": LIMITS, "base_load_scale": 0.85},
        fleet=[{"name": "pv", "kind": "pv", "count": 2, "placement": {"rule": "buses", "buses": [6, 7]},
                "params": {"p_peak_kw": 2, "s_rated_kva": 2}},
               {"name": "ev", "kind": "ev", "count": 3, "placement": {"rule": "buses", "buses": [7]},
                "params": {"p_max_kw": 11, "arrival_h_mean": 17.1, "arrival_h_std": 0.0}}],
        base_load={"profile": "residential", "noise_pct": 0},
        controller={"enabled": False, "cycle_s": 60, "objective": "dr"}, outputs={"report": False}))
    tw = Twin(s)
    host = EmulatorHost(tw, groups=[], meter=False)  # the feeder RTU only
    rtu_ep = next(e for e in host.start() if e["protocol"] == "iec104")
    t0 = s.start.timestamp()
    clock = SteppedClock(t0)
    direct = DirectLink(TwinPort(tw), clock, groups=["pv", "ev", "meter"])
    rtu = Iec104Link.from_endpoints([{**rtu_ep, "sbo": False}], clock)
    try:
        assert rtu.wait_connected(20.0)
        ctl = assemble(Spec.from_scenario(s), {"pv": direct, "ev": direct, "meter": direct, "rtu": rtu},
                       clock, None, feeder_model(s), s.feeder.limits)

        def in_sync():  # the RTU's positions and far-end voltage as the controller reads them
            v = rtu.read()[rtu_ep["device_id"]]
            return (v["tap_pos.0"].value == tw.net.trafo.tap_pos.iloc[0]
                    and v["cap_step.0"].value == tw.net.shunt.step.iloc[0]
                    and abs(v["v_pu.7"].value - tw.grid.v_meas_pu[7]) <= 0.0021)

        v_min = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for k in range(1, 16):
                host.step(60.0 * k)  # twin to t, RTU publishes
                v_min.append(float(tw.grid.result.v_pu.min()))
                assert wait_for(in_sync), f"RTU values not through at {k} min"
                clock.advance_to(t0 + 60.0 * k)
                ctl.cycle()
        yield tw, ctl, host, np.array(v_min)
    finally:
        rtu.close()
        host.stop()


def test_steps_go_through_the_iec104_rtu_and_restore_the_band(run):
    tw, ctl, host, v = run
    src = next(x for x in ctl.sources if x.name == "volt_var")
    steps = [(s["device_id"], s["value"]) for s in src.steps]
    assert steps[0] == ("rtu/cap0", 1.0) and ("rtu/trafo0", -1.0) in steps, src.steps
    sent = [(r["device_id"], r["value"], r["ok"]) for r in ctl.hist.query("setpoints", limit=1000)
            if r["setpoint"] in ("tap_pos", "step")]
    assert sent == [(d, val, 1) for d, val in steps]  # every step confirmed by the RTU
    assert host.rtu.commands == len(steps)  # and executed there, nothing else
    assert tw.net.trafo.tap_pos.iloc[0] == -1 and tw.net.shunt.step.iloc[0] >= 1
    # out of band at the first minute and when the cars plug in (17:06), each time back by the next minute
    out = np.flatnonzero(v < 0.95)
    assert len(out) <= 2 and not np.any(np.diff(out) == 1), v.round(4)
    assert v[-1] >= 0.95 and v.max() <= 1.05
    assert ctl.snapshot_fn(ctl.state).trafo_tap_pos == {0: -1.0}  # the gate's model follows the RTU
