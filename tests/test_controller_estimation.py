"""The state estimator in the running cycle: on cigre_mv_day (controller in-process, the RTU
reports every bus voltage, the head meter answers) the safety gate's grid state comes from
the WLS estimate, not from the nominal allocation; a gross error injected into one RTU
voltage is detected and removed (event state_estimate_bad_data, alarm bad_measurement), and
the gate still keeps the feeder in band through the DR event."""

import numpy as np
import pytest

from hil.direct import attach_controller
from scenarios.load import load_scenario
from twin.simulation import Twin

BAD_K, BAD_FROM_S = 5, 1500.0  # the RTU's voltage of bus position 5 reads 0.15 pu high from then


@pytest.fixture(scope="module")
def run():
    s = load_scenario("scenarios/cigre_mv_day.yaml", overrides={
        "start": "2026-06-21T17:50:00Z", "duration_s": 80 * 60, "assertions": []})
    tw = Twin(s)
    att = attach_controller(tw)
    port = att.link.port
    honest = port.rtu_values

    def rtu_values():  # a fault in one RTU channel (the twin itself is untouched)
        out = honest()
        if tw.t_s >= BAD_FROM_S and f"v_pu.{BAD_K}" in out:
            out[f"v_pu.{BAD_K}"] = [out[f"v_pu.{BAD_K}"][0] + 0.15]
        return out

    port.rtu_values = rtu_values
    bases, vs = [], []
    tw.after_step.append(lambda t: vs.append((float(np.max(t.grid.result.v_pu)),
                                              float(np.min(t.grid.result.v_pu)))))
    tw.add_periodic(600.0, lambda t: bases.append(att.controller.last_report.get("gate_basis")), 30.0)
    tw.run()
    att.finish(tw)
    return tw, att.controller, bases, np.array(vs)


def test_gate_uses_the_estimate_and_drops_the_bad_measurement(run):
    tw, c, bases, vs = run
    assert bases and all(b == "estimate" for b in bases[1:])
    assert c.gate.last_report["basis"] == "estimate"
    bad = c.hist.events_of("state_estimate_bad_data")
    bus = int(c.feeder_net.bus.index[BAD_K])
    assert bad and any(r["element"] == bus and r["type"] == "v" for r in bad[0]["removed"])
    assert bad[0]["t"] >= tw.scenario.start.timestamp() + BAD_FROM_S
    assert any(a["kind"] == "bad_measurement" for a in c.hist.alarms())
    lim = tw.scenario.feeder.limits
    assert vs[:, 0].max() <= lim.v_max_pu and vs[:, 1].min() >= lim.v_min_pu  # still in band
    assert tw.kpi_extra["dr"]["evening-peak"]["delivery_pct"] > 95.0
