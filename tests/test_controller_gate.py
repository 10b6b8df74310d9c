"""The safety gate wired into the controller cycle (hil/direct.py, in-process): on the PV
over-voltage case the price peak tells batteries to export; without the gate LV buses go
above 1.05 pu, with it they stay inside the band while the batteries still export what the
feeder can take. Curtailments raise alarms, land in the historian and in the API."""

import numpy as np
import yaml
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.commands import Command, Decision, GateResult
from hil.direct import attach_controller
from scenarios.model import Scenario
from twin.simulation import Twin


def _run(gate: bool, duration_s: int = 900):
    d = yaml.safe_load(open("scenarios/hil/hil_pv_overvoltage.yaml"))
    d.update(duration_s=duration_s, assertions=[], outputs={"report": False})
    for g in d["fleet"]:
        g.pop("link", None)
    d["controller"]["safety_gate"] = gate
    tw = Twin(Scenario.model_validate(d))
    att = attach_controller(tw)
    v_max, bat_kw = [], []
    tw.after_step.append(lambda t: bat_kw.append(float(t.fleets["home_batteries"].p_kw.sum())))
    tw.run()
    att.finish(tw)
    return tw, att.controller, bat_kw


def test_gate_keeps_voltage_band_and_reports_curtailments():
    tw_off, ctl_off, bat_off = _run(False)
    assert tw_off.violation_by_kind.get("v_high", 0) >= 5  # the case is real without the gate
    assert ctl_off.kpis()["gate"] == "PassThroughGate"

    tw, ctl, bat = _run(True)
    assert tw.violation_by_kind.get("v_high", 0) == 0
    k = ctl.kpis()
    assert k["gate"] == "SafetyGate" and k["gate_totals"]["curtailed"] > 0
    # the batteries still export, less than without the gate
    assert 0 < -np.mean(bat[60:]) < -np.mean(bat_off[60:])
    alarms = [a for a in ctl.hist.alarms() if a["kind"] == "gate_curtailed"]
    assert alarms and all(a["device_id"].startswith("home_batteries/") for a in alarms)
    assert "v_high:bus" in alarms[0]["message"]
    assert any(e["kind"] == "gate" for e in ctl.hist.query("events", limit=10_000))
    dec = ctl.hist.query("decisions", limit=10_000)
    assert dec and {r["verdict"] for r in dec} <= {"curtailed", "rejected"}

    # an operator asking for more export goes through the same gate; the API shows the verdict
    app = TestClient(create_app(ctl, {"op": {"user": "op1", "role": "operator"}}))
    h = {"Authorization": "Bearer op"}
    dev = ctl.last_gate.curtailed[0].command.device_id  # one the feeder cannot take -5 kW from
    r = app.post("/api/commands", headers=h, json={"device_id": dev,
                                                   "setpoint": "p_set_kw", "value": -5.0})
    assert r.status_code == 202
    t = ctl.clock.now() + 60
    ctl.clock.advance_to(t)
    ctl.cycle(t)
    gate = app.get("/api/gate", headers=h).json()
    mine = [d for d in gate if d["device_id"] == dev]
    assert mine and mine[0]["source"] == "operator" and mine[0]["verdict"] in ("curtailed", "rejected")
    summary = app.get("/api/gate/summary", headers=h).json()
    assert summary["gate"] == "SafetyGate" and summary["totals"]["curtailed"] >= k["gate_totals"]["curtailed"]


class Boom:
    fail = True

    def check(self, commands, state):
        if self.fail:
            raise RuntimeError("sensitivities singular")
        return GateResult([Decision(c, "accepted", c.value, []) for c in commands])


def test_failing_gate_rejects_everything_and_alarms():
    from controller.clock import SteppedClock
    from controller.core import Controller, CycleSettings
    from controller.links.base import DeviceInfo, DeviceLink, DeviceStatus

    class OneBattery(DeviceLink):
        writes = []

        def devices(self):
            return [DeviceInfo("bat/0", "bat", "battery", 1, {"p_max_kw": 5.0})]

        def read(self):
            return {}

        def status(self):
            return {"bat/0": DeviceStatus(True)}

        def write(self, device_id, setpoint, value):
            self.writes.append((device_id, setpoint, value))
            return True

    link = OneBattery()
    clock = SteppedClock(0.0)
    ctl = Controller({"bat": link}, clock, gate=Boom(), settings=CycleSettings(optimize_every_s=0))
    ctl.operator_command(Command("bat/0", "p_set_kw", -5.0, "operator", "test"))
    rep = ctl.cycle(60.0)
    assert link.writes == [] and rep["rejected"] == 1
    assert [a["kind"] for a in ctl.hist.alarms(active_only=True)] == ["gate_failed", "gate_rejected"]
    assert ctl.last_gate.decisions[0].reasons == ["gate_error"]
    ctl.gate.fail = False  # the gate works again: its alarm clears (once), the command goes out
    ctl.operator_command(Command("bat/0", "p_set_kw", -5.0, "operator", "test"))
    ctl.cycle(120.0)
    assert "gate_failed" not in [a["kind"] for a in ctl.hist.alarms(active_only=True)]
    assert link.writes == [("bat/0", "p_set_kw", -5.0)]
    ctl.gate.fail = True  # and fails again: a new alarm
    ctl.cycle(180.0)
    assert "gate_failed" in [a["kind"] for a in ctl.hist.alarms(active_only=True)]
