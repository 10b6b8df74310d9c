"""Hardware bridge: a separately started device process on 127.0.0.2 stands in for a real
inverter; the HIL twin does not emulate that group but feeds its measured P into the feeder."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, needs_emulators
from ports import free_port

pytestmark = [needs_emulators, pytest.mark.timeout(180)]

LAB = (ROOT / "scenarios/hil/lab_bench_pv.yaml").read_text()  # the lab bench twin


def test_real_endpoint_is_read_back_into_the_feeder(tmp_path):
    from hil.bridge import attach_bridge
    from scenarios.load import load_scenario
    from twin.simulation import Twin

    port = free_port("127.0.0.2")
    lab = tmp_path / "lab.yaml"
    lab.write_text(LAB)
    proc = subprocess.Popen([sys.executable, "-m", "hil.lab_device", str(lab), "--group", "lab_pv",
                             "--host", "127.0.0.2", "--port", str(port)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith("READY"), line
        hil = tmp_path / "hil.yaml"
        hil.write_text(LAB.replace("name: lab_bench", "name: hil_bench").replace(
            "params: {p_peak_kw: 400, s_rated_kva: 400}}",
            f"params: {{p_peak_kw: 400, s_rated_kva: 400}},\n     endpoint: {{host: 127.0.0.2, port: {port}, unit: 1, map: sunspec_pv}}}}"))
        s = load_scenario(hil)
        s.duration_s = 30
        tw = Twin(s)
        bridge = attach_bridge(tw)
        assert bridge.groups == ["lab_pv"]
        tw.run_until(30)
        bridge.close()
        p_meas = bridge.measured["lab_pv"][0][0]
        # the lab device's own twin at 11:00 on a clear day: a 400 kWp array exports ~250+ kW
        assert p_meas < -100.0, p_meas
        assert tw.fleets["lab_pv"].p_kw[0] == pytest.approx(p_meas)
        der = tw.grid.result.der_p_kw
        assert der == pytest.approx(p_meas, rel=1e-6), "the feeder must see the measured injection"
        assert bridge.polls >= 5 and bridge.stale_polls == 0
    finally:
        proc.terminate()
        proc.wait(timeout=20)
    # with the device gone the twin keeps the last value and says so
    tw2 = Twin(s)
    b2 = attach_bridge(tw2)
    tw2.run_until(10)
    b2.close()
    assert b2.stale_polls >= 1 and tw2.events.of_kind("bridge_stale")
    assert np.isfinite(tw2.grid.result.v_pu).all()
