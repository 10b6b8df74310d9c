"""The CIGRE LV evening-peak fleet (EVs, batteries, PV) plus six flexible pumps, with the
controller on: the small world the DR and emergency cycle tests run in."""

import yaml

from scenarios.model import Scenario


def lv_scenario(start: str, duration_s: float, device_step_s: float, power_flow_interval_s: float,
                controller: dict, dr_events=()) -> Scenario:
    with open("scenarios/cigre_lv_evening_peak.yaml") as f:
        d = yaml.safe_load(f)
    d.pop("assertions")
    d.update(start=start, duration_s=duration_s, device_step_s=device_step_s,
             power_flow_interval_s=power_flow_interval_s)
    d["fleet"].append({"name": "pumps", "kind": "flex_load", "count": 6,
                       "params": {"p_nom_kw": 8, "flex_share": 0.5}})
    d["controller"] = {"enabled": True, **controller}
    d["dr_events"] = list(dr_events)
    d["outputs"] = {"timeseries_every_s": 60, "report": False}
    return Scenario.model_validate(d)
