"""The live schedule covers every controllable class (issue 12): scenarios/all_classes_schedule.yaml
runs in-process (hil/direct.py: the real controller cycle, safety gate on) and each class is
scheduled by controller/scheduling.py through the dispatch optimizer (Pyomo + HiGHS).

Prices: 11-13 h negative, 14-15 h peak, 15-16 h cheap, 80 EUR/MWh otherwise. Checked in the
running cycle: commands of each kind written; EVs full by departure, charging in the negative
hours; PV curtailed only then; flexible loads cut in the peak and their energy paid back (rebound
1: preserved); air conditioners held off in the peak within their comfort band; batteries within
their SOC limits, charging in the negative hours and discharging in the peak; the plan in the
historian and the API. Plus the optimizer pieces the scenario does not reach: the export limit,
the DR reserve and the fall-back to the last plan.
"""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from fastapi.testclient import TestClient

from controller.api.app import create_app
from controller.dispatch import Batteries, DispatchProblem, PvUnits
from controller.dispatch.dispatcher import Dispatcher
from controller.historian import Historian
from controller.sources.schedule import ScheduleSource
from hil.direct import attach_controller
from scenarios.load import load_scenario
from scenarios.model import DrEvent
from twin.simulation import Twin

SC = load_scenario(Path(__file__).resolve().parent.parent / "scenarios/all_classes_schedule.yaml")
T0 = SC.start.timestamp()
NEG, PEAK = (11.0, 13.0), (14.0, 15.0)


def _hour(t_s):
    return 9.0 + np.asarray(t_s, float) / 3600.0


@pytest.fixture(scope="module")
def run():
    tw = Twin(SC)
    hist = Historian(":memory:", "NORMAL")
    att = attach_controller(tw, hist)
    c = att.controller
    f = tw.fleets
    rows = []

    def hook(t):
        b = f["batteries"]
        rows.append((t.t_s, float(f["ev_chargers"].p_kw.sum()), float(f["rooftop_pv"].p_avail_kw.sum()),
                     float(-f["rooftop_pv"].p_kw.sum()), float(f["pumps"].p_kw.sum()), float(f["acs"].p_kw.sum()),
                     float(b.p_kw.sum()), float((b.soc_kwh / b.e_cap_kwh).min()),
                     float((b.soc_kwh / b.e_cap_kwh).max())))

    tw.after_step.append(hook)
    tw.run()
    att.finish(tw)
    client = TestClient(create_app(c, {"v": {"user": "v", "role": "viewer"}}))
    auth = {"Authorization": "Bearer v"}
    api = {"schedule": client.get("/api/schedule", headers=auth).json(),
           "head": client.get("/api/head", headers=auth).json()}
    cols = ("t_s", "ev_kw", "pv_avail_kw", "pv_kw", "flex_kw", "tcl_kw", "bat_kw", "soc_min", "soc_max")
    return SimpleNamespace(tw=tw, c=c, hist=hist, s=dict(zip(cols, np.array(rows).T)), api=api)


def _written(hist, setpoint):
    r = hist._rows("SELECT t, device_id, value FROM setpoints WHERE setpoint = ? AND source = 'dispatch' "
                   "AND ok = 1", (setpoint,))
    return np.array([x["t"] for x in r]), np.array([x["value"] for x in r])


def _mean(s, name, hours):
    h = _hour(s["t_s"])
    w = (h >= hours[0]) & (h < hours[1])
    return float(s[name][w].mean())


def test_each_class_gets_schedule_commands_in_the_running_cycle(run):
    for sp in ("p_set_kw", "p_max_set_kw", "p_limit_pct", "curtail_pct", "force"):
        t, _ = _written(run.hist, sp)
        assert t.size > 0, f"no schedule command {sp} written"
    assert not [a for a in run.hist.alarms() if a["kind"] == "optimizer_failed"]
    n = run.hist._rows("SELECT count(*) n FROM schedules")[0]["n"]
    assert n >= SC.duration_s / 900 - 1  # re-planned every 15 min (and when cars plug in)


def test_stored_plans_are_plain_json_and_resume_as_planned(run):
    """The historian writes a plan as exactly the text json.dumps would (it encodes each shared
    device row once), and the resumed plan is the one in force, setpoint for setpoint."""
    texts = [r["data"] for r in run.hist._rows("SELECT data FROM schedules ORDER BY id")]
    for text in texts:
        assert json.dumps(json.loads(text)) == text
    data = json.loads(texts[-1])
    assert data == json.loads(json.dumps(run.hist.latest_schedule()["data"]))
    for g, per in data["setpoints"].items():
        vals = np.asarray(per["values"], float)
        assert vals.ndim == 2 and vals.shape[1] == len(data["price_eur_per_mwh"]), g
    assert json.loads(json.dumps(run.c.schedule_src.schedule["data"])) == data  # the plan in force


def test_evs_charge_in_the_negative_hours_and_are_full_by_departure(run):
    k = run.tw.fleets["ev_chargers"].kpis()
    assert k["sessions"] == 6 and k["delivered_kwh"] > 40.0
    assert k["unmet_kwh"] <= 0.05, k  # energy by departure (departure from the charger's telemetry)
    s = run.s
    h = _hour(s["t_s"])
    neg = (h >= NEG[0]) & (h < NEG[1])
    assert s["ev_kw"][neg].sum() >= 0.9 * s["ev_kw"].sum()  # uncontrolled they would charge at 09:30


def test_pv_is_curtailed_only_in_the_negative_price_hours(run):
    assert run.tw.fleets["rooftop_pv"].kpis()["curtailed_kwh"] > 50.0
    t, v = _written(run.hist, "p_limit_pct")
    h = _hour(t - T0)
    assert np.all((h[v < 99.9] >= NEG[0]) & (h[v < 99.9] < NEG[1]))
    assert np.any((h >= NEG[1]) & (v >= 99.9))  # released afterwards
    s = run.s
    hs = _hour(s["t_s"])
    lost = s["pv_avail_kw"] - s["pv_kw"]
    outside = (hs < NEG[0]) | (hs >= NEG[1] + 0.1)  # one cycle for the release to land
    assert lost[outside].max() < 0.5, lost[outside].max()
    assert lost[(hs >= NEG[0] + 0.1) & (hs < NEG[1])].mean() > 0.8 * s["pv_avail_kw"][
        (hs >= NEG[0] + 0.1) & (hs < NEG[1])].mean()


def test_flexible_loads_cut_in_the_peak_and_their_energy_paid_back(run):
    t, v = _written(run.hist, "curtail_pct")
    h = _hour(t - T0)
    assert v[(h >= PEAK[0]) & (h < PEAK[1])].max() > 50.0  # cut in the peak
    assert not np.any(v[(h >= 15.25)] > 0)  # nothing cut in the cheap hour that follows
    pumps = run.tw.fleets["pumps"]
    assert float(pumps.owed_kwh.sum()) < 0.5  # rebound 1: every curtailed kWh came back (shifted, not shed)
    assert _mean(run.s, "flex_kw", PEAK) < _mean(run.s, "flex_kw", (15.0, 16.0))


def test_tcl_virtual_battery_held_off_in_the_peak_within_the_comfort_band(run):
    t, v = _written(run.hist, "force")
    h = _hour(t - T0)
    assert np.any((v < 0) & (h >= PEAK[0]) & (h < PEAK[1]))
    k = run.tw.fleets["acs"].kpis()
    assert k["comfort_degree_minutes"] < 1.0 and k["lockout_violations"] == 0, k
    assert _mean(run.s, "tcl_kw", PEAK) < _mean(run.s, "tcl_kw", (15.0, 16.0))


def test_batteries_follow_prices_within_their_soc_limits(run):
    s = run.s
    assert s["soc_min"].min() >= 0.10 - 1e-3 and s["soc_max"].max() <= 0.95 + 1e-3
    assert _mean(s, "bat_kw", NEG) > 5.0  # charging at negative prices
    assert _mean(s, "bat_kw", PEAK) < -0.8 * 6 * 4.0  # six 4 kW batteries discharging in the peak


def test_the_plan_is_in_the_historian_and_the_api(run):
    sched = run.api["schedule"]
    sp = {g: v["setpoint"] for g, v in sched["data"]["setpoints"].items()}
    assert sp == {"batteries": "p_set_kw", "ev_chargers": "p_max_set_kw", "rooftop_pv": "p_limit_pct",
                  "pumps": "curtail_pct"}
    assert set(sched["data"]["tcl_p_target_kw"]) == {"acs"}
    assert set(sched["data"]["group_p_kw"]) == {"batteries", "ev_chargers", "rooftop_pv", "pumps", "acs"}
    assert run.hist.latest_schedule()["kind"] == "fleet_rolling"
    assert run.api["head"]["schedule_kind"] == "head" and len(run.api["head"]["schedule_p_kw"]) == 96


def test_a_dr_event_in_the_peak_gets_the_fleet_the_plan_would_have_used():
    """A 30 kW DR event 14:00-14:30 (the price peak): the plan leaves the window to the DR
    program (batteries idle, no flexible-load cut from an hour before), which delivers against
    that plan; the schedule's own commands there come second in the merge."""
    ev = DrEvent(id="peak", start=SC.start.replace(hour=14), duration_s=1800, reduction_kw=30.0)
    sc = SC.model_copy(update={"dr_events": [ev], "duration_s": 6 * 3600}, deep=True)
    tw = Twin(sc)
    hist = Historian(":memory:", "NORMAL")
    att = attach_controller(tw, hist)
    tw.run()
    att.finish(tw)
    dr = att.controller.dr_summary()["peak"]
    assert dr["status"] == "completed" and abs(dr["delivery_pct"] - 100.0) < 5.0, dr
    t, v = _written(hist, "curtail_pct")
    h = _hour(t - T0)
    assert not np.any(v[(h >= 13.0) & (h < 14.5)] > 0)  # the schedule cut no pump before/in the event
    t_ev = ev.start.timestamp()
    plan = hist._rows("SELECT t0, step_s, data FROM schedules WHERE created_t < ? ORDER BY id DESC LIMIT 1",
                      (t_ev,))[0]
    sched = json.loads(plan["data"])
    k = int((t_ev - plan["t0"]) // plan["step_s"])  # the plan's step at 14:00: left to the DR program
    assert np.allclose(np.asarray(sched["setpoints"]["batteries"]["values"])[:, k], 0.0)


# --- the optimizer pieces the scenario does not reach ----------------------------------------------

def _pv_problem(**kw):
    n = 8
    avail = np.tile(np.r_[0, 20, 40, 60, 60, 40, 20, 0.0], (2, 1))  # two inverters, 60 kW each at noon
    return DispatchProblem(0.0, 900.0, n, np.full(n, 50.0), np.full(n, 30.0),
                           pv=PvUnits(["pv/0", "pv/1"], np.array([0, 0]), avail, np.full(2, 80.0)), **kw)


def test_export_limit_curtails_pv_only_beyond_the_limit():
    free = Dispatcher().day_ahead(_pv_problem())
    assert min(free.head_p_kw) == pytest.approx(30.0 - 120.0)  # positive price: nothing curtailed
    lim = Dispatcher().day_ahead(_pv_problem(export_limit_kw=50.0))
    assert min(lim.head_p_kw) == pytest.approx(-50.0, abs=1e-6)  # export held at the limit
    cut = lim.head_p_kw - free.head_p_kw  # curtailed kW
    assert cut.max() == pytest.approx(40.0, abs=1e-6) and np.all(cut >= -1e-6)
    assert lim.head_p_kw[0] == pytest.approx(30.0)  # no curtailment where the limit is not reached


def test_dr_reserve_keeps_batteries_idle_and_charged_for_the_window():
    n = 16
    price = np.r_[np.full(8, 50.0), np.full(8, 300.0)]  # the plan would discharge from step 8 on
    bat = Batteries(["b/0"], np.array([0]), np.array([10.0]), np.array([40.0]), np.array([20.0]),
                    np.array([4.0]), np.array([38.0]), np.array([0.95]), np.array([0.95]), np.array([0.0]))
    reserve = np.zeros(n, bool)
    reserve[8:12] = True  # a one-hour DR event at the start of the expensive block
    s = Dispatcher().day_ahead(DispatchProblem(0.0, 900.0, n, price, np.zeros(n), batteries=bat,
                                               reserve_steps=reserve))
    p = s.p_kw["b/0"]
    assert np.allclose(p[8:12], 0.0, atol=1e-6)  # left to the DR program
    # it enters the window able to discharge 10 kW for the hour: soc_min + 10 kWh / eta_dis
    assert s.soc_kwh["b/0"][7] >= 4.0 + 10.0 / 0.95 - 1e-6
    assert p[12:].min() < -9.9  # and still sells after the window


def test_a_failed_solve_keeps_the_last_plan_and_says_so():
    hist = Historian(":memory:", "NORMAL")
    calls = []

    class Sched:
        def optimize(self, t, state, dr_windows=()):
            calls.append(t)
            if len(calls) > 1:
                raise RuntimeError("dispatch day_ahead: HiGHS returned maxTimeLimit")
            return {"t0": t, "step_s": 900.0, "kind": "fleet_rolling",
                    "data": {"setpoints": {}, "tcl_p_target_kw": {}}}

    ctl = SimpleNamespace(hist=hist, cfg=SimpleNamespace(optimize_every_s=900.0), tcl=None, dr={},
                          dr_program=SimpleNamespace(active=lambda t=None: False),
                          emergency_src=SimpleNamespace(active=False, restoring=None))
    src = ScheduleSource(ctl, Sched())
    state = SimpleNamespace(groups={})
    src.commands(0.0, state)
    first = src.schedule
    src.commands(900.0, state)
    assert calls == [0.0, 900.0] and src.schedule is first and src.fallbacks == 1
    assert [a["kind"] for a in hist.alarms()] == ["optimizer_failed"]
    assert hist._rows("SELECT count(*) n FROM events WHERE kind = 'schedule_fallback'")[0]["n"] == 1


def _ev_state(t, departure_t=None):
    from controller.links.base import DeviceInfo
    from controller.state import FleetState, empty_group

    g = empty_group("ev", [DeviceInfo("ev/0", "ev", "ev", 1, {"p_max_kw": 7.0, "eta": 0.92})])
    vals = {"connected": 1.0, "e_need_kwh": 10.0, "p_kw": 0.0}
    if departure_t is not None:
        vals["departure_t"] = departure_t
    for k, v in vals.items():
        g.values[k], g.quality[k] = np.array([v]), np.zeros(1, np.int8)
    return FleetState(t, {"ev": g})


def test_ev_departure_from_telemetry_else_the_groups_config_else_the_default():
    from controller.scheduling import FleetScheduler

    day = 1_784_073_600.0  # 2026-07-15 00:00 UTC
    t = day + 20 * 3600.0  # 20:00

    def price(times):  # 100 until 02:00, 50 until 04:00, 40 until 07:00, then free
        h = (np.asarray(times) - day) / 3600.0 - 24.0
        return np.select([h < 2, h < 4, h < 7], [100.0, 50.0, 40.0], 0.0)

    def charged(sched_kw, times):
        e = np.asarray(sched_kw) * 0.25
        h = (times - day) / 3600.0 - 24.0
        return {w: float(e[(h >= a) & (h < b)].sum()) for w, (a, b) in
                {"-2": (-5, 2), "2-3": (2, 3), "3-4": (3, 4), "4-7": (4, 7), "7-": (7, 99)}.items()}

    times = t + 900.0 * np.arange(96)
    runs = {"telemetry 03:00": FleetScheduler(price, ev_departure_h={"ev": 7.0}).optimize(
                t, _ev_state(t, departure_t=day + 27 * 3600.0)),
            "config 07:00": FleetScheduler(price, ev_departure_h={"ev": 7.0}).optimize(t, _ev_state(t)),
            "default 8 h": FleetScheduler(price).optimize(t, _ev_state(t))}
    e = {k: charged(r["data"]["group_p_kw"]["ev"], times) for k, r in runs.items()}
    need = 10.0 / 0.92  # grid-side kWh
    # telemetry wins over the config: full one step before 03:00, the cheap 02:00-02:45 first
    assert e["telemetry 03:00"]["2-3"] == pytest.approx(0.75 * 7.0, abs=0.01)
    assert sum(e["telemetry 03:00"][w] for w in ("-2", "2-3")) == pytest.approx(need, abs=0.01)
    # the group's configured 07:00: the cheapest hours before it (04-07), none after
    assert e["config 07:00"]["4-7"] == pytest.approx(need, abs=0.01) and e["config 07:00"]["7-"] < 1e-6
    # neither: 8 h from now (04:00), so the 02-04 block
    assert e["default 8 h"]["2-3"] + e["default 8 h"]["3-4"] == pytest.approx(need, abs=0.01)


def test_scenario_export_limit_is_planned_and_held_on_the_meter():
    """`controller.export_limit_kw` in a scenario: the running controller's plans keep the head's
    planned export within it (a light feeder at noon exports ~56 kW unmanaged; limit 30 kW), and
    the export-limit source holds it on the metered head power, where the plan alone let 37.3 kW
    through (forecast error, quarter-hour steps): beyond the limit only until the next cycle."""
    feeder = SC.feeder.model_copy(update={"base_load_scale": 0.1})
    s = SC.model_copy(update={"duration_s": 3600.0, "feeder": feeder,
                              "controller": SC.controller.model_copy(update={"export_limit_kw": 30.0})})
    tw = Twin(s)
    hist = Historian(":memory:", "NORMAL")
    att = attach_controller(tw, hist)
    head = []  # the twin's own head power at each power flow (import +)
    tw.after_step.append(lambda w: head.append(w.grid.result.p_head_kw) if w.step_index % w.pf_every == 0 else None)
    tw.run()
    att.finish(tw)
    assert att.controller.scheduler.export_limit_kw == 30.0
    plans = hist._rows("SELECT data FROM schedules")
    assert plans
    for row in plans:
        planned = np.asarray(json.loads(row["data"])["head_p_kw"], float)
        assert planned.min() >= -30.0 - 1e-3, planned.min()
    export = -np.asarray(head)
    active = hist._rows("SELECT t FROM events WHERE kind = 'export_limit_active'")
    assert active and export.max() > 30.0  # the plan alone does not hold it on the meter ...
    assert export.max() < 30.0 + 1.5, export.max()  # ... the source does, from the next cycle on
    assert (export > 30.0).sum() <= len(active), export  # one power flow beyond per activation at most
    assert export.mean() > 30.0 - 15.0  # PV is capped to the limit, not shut down
