"""Twin physics: energy balance at the feeder, battery SOC limits, PV irradiance limits."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scenarios.model import FleetGroup, Scenario
from twin.fleet.base import Ambient, SetpointError
from twin.fleet.battery import BatteryFleet
from twin.fleet.pv import PvFleet
from twin.simulation import Twin


def small_scenario(**kw) -> Scenario:
    data = dict(
        name="small", start="2026-06-21T11:00:00Z", duration_s=1800, seed=5,
        feeder={"kind": "cigre_mv"},
        fleet=[
            {"name": "pv", "kind": "pv", "count": 40, "params": {"p_peak_kw": 50, "s_rated_kva": 45}},
            {"name": "bat", "kind": "battery", "count": 10, "params": {"p_max_kw": 20, "e_cap_kwh": 40}},
            {"name": "ev", "kind": "ev", "count": 10, "params": {"arrival_h_mean": 11.0}},
            {"name": "flex", "kind": "flex_load", "count": 5},
        ],
        outputs={"report": False},
    )
    data.update(kw)
    return Scenario.model_validate(data)


def test_energy_balance_at_every_power_flow():
    """Feeder head import = own loads + own generators + DER fleet + losses (load convention)."""
    twin = Twin(small_scenario())
    twin.fleets["bat"].p_set_kw[:] = np.linspace(-20, 20, 10)
    checks = []

    def check(tw):
        if tw.step_index % tw.pf_every == 0:
            r = tw.grid.result
            fleet_kw = sum(float(f.p_kw.sum()) for f in tw.fleets.values())
            assert r.der_p_kw == pytest.approx(fleet_kw, abs=1e-6)
            checks.append(r.p_head_kw - (r.load_p_kw + r.sgen_p_kw + r.der_p_kw + r.losses_kw))

    twin.after_step.append(check)
    twin.run()
    assert len(checks) == 30
    assert np.max(np.abs(checks)) < 1e-3  # kW, Newton-Raphson tolerance
    # PV really generated and the batteries really moved (the balance is not trivially 0 = 0)
    assert twin.fleets["pv"].energy_kwh < -100
    assert twin.fleets["bat"].throughput_kwh > 10


def _battery(n=3, **params):
    g = FleetGroup(name="b", kind="battery", count=n, params=params)
    return BatteryFleet(g, np.zeros(n, dtype=int), np.random.default_rng(0))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-1e4, 1e4, allow_nan=False), min_size=1, max_size=200),
       st.floats(0.5, 900.0))
def test_battery_soc_stays_within_limits(setpoints, dt_s):
    bat = _battery(e_cap_kwh=10, p_max_kw=50, eta_ch=0.9, eta_dis=0.92, soc_init_pct=50)
    amb = Ambient(0, 0, 20, 12)
    for sp in setpoints:
        bat.p_set_kw[:] = sp  # raw array write: physics must clip even if the setpoint was not checked
        e0 = bat.soc_kwh.copy()
        bat.step(dt_s, amb)
        assert np.all(bat.soc_kwh >= bat.soc_min_kwh - 1e-9)
        assert np.all(bat.soc_kwh <= bat.soc_max_kwh + 1e-9)
        assert np.all(np.abs(bat.p_kw) <= bat.p_max_kw + 1e-9)
        de = bat.soc_kwh - e0  # energy bookkeeping follows the efficiencies exactly
        expect = np.where(bat.p_kw > 0, bat.p_kw * 0.9, bat.p_kw / 0.92) * dt_s / 3600
        np.testing.assert_allclose(de, expect, atol=1e-9)


def test_battery_setpoint_outside_limits_rejected():
    bat = _battery(p_max_kw=5)
    with pytest.raises(SetpointError, match=r"b\[1\]\.p_set_kw=7 outside \[-5, 5\]"):
        bat.write("p_set_kw", 1, 7.0)
    assert bat.p_set_kw[1] == 0.0
    bat.write("p_set_kw", 1, -5.0)
    assert bat.p_set_kw[1] == -5.0


def test_one_device_write_checks_exactly_what_an_array_write_checks():
    """A link writes one device at a time: that path must accept, reject and report exactly as
    the array path does, for every setpoint of every fleet kind (bounds per device or fixed)."""
    s = small_scenario(fleet=[*small_scenario().model_dump()["fleet"],
                              {"name": "ac", "kind": "tcl", "count": 6}])
    twin = Twin(s)
    rng = np.random.default_rng(11)
    for f in twin.fleets.values():
        for name in f.SETPOINTS:
            lo, hi = f.limits(name)
            for _ in range(30):
                i = int(rng.integers(-f.n, f.n))
                v = float(rng.choice([lo[i], hi[i], lo[i] - 1e-6, hi[i] + 1e-6, rng.uniform(lo[i] - 5, hi[i] + 5),
                                      np.nan, np.inf]))
                if name in getattr(f, "INTEGER_SETPOINTS", ()) and np.isfinite(v):
                    v = float(np.round(v))
                before = getattr(f, name).copy()
                try:
                    f.write(name, i, v)
                    one = None
                except SetpointError as e:
                    one = str(e)
                after_one = getattr(f, name).copy()
                getattr(f, name)[:] = before
                try:
                    f.write(name, np.array([i]), np.array([v]))
                    many = None
                except SetpointError as e:
                    many = str(e)
                assert one == many, (f.name, name, i, v)
                assert np.array_equal(after_one, getattr(f, name), equal_nan=True)
        with pytest.raises(SetpointError, match="unknown setpoint"):
            f.write("no_such_setpoint", 0, 1.0)


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 1300), st.floats(-20, 45), st.floats(0, 100))
def test_pv_never_exceeds_irradiance_limited_power(ghi, t_out, limit_pct):
    g = FleetGroup(name="pv", kind="pv", count=4,
                   params={"p_peak_kw": {"dist": "uniform", "low": 3, "high": 12}, "s_rated_kva": 10})
    pv = PvFleet(g, np.zeros(4, dtype=int), np.random.default_rng(1))
    pv.write("p_limit_pct", slice(None), limit_pct)
    pv.step(1.0, Ambient(0, ghi, t_out, 12))
    gen = -pv.p_kw
    t_cell = t_out + 0.03 * ghi
    dc = pv.p_peak_kw * ghi / 1000 * (1 + pv.temp_coeff_per_c * (t_cell - 25))
    assert np.all(gen >= 0)
    assert np.all(gen <= dc * pv.efficiency + 1e-9)  # irradiance-limited
    assert np.all(gen <= pv.s_rated_kva + 1e-9)  # inverter-limited
    assert np.all(gen <= limit_pct / 100 * pv.s_rated_kva + 1e-9)  # curtailment


def test_ev_sessions_deliver_energy_and_respect_cap():
    twin = Twin(small_scenario(duration_s=3600 * 3))
    ev = twin.fleets["ev"]
    ev.write("p_max_set_kw", slice(None), 3.0)
    twin.run()
    assert ev.delivered_kwh > 0
    assert ev.p_kw.max() <= 3.0 + 1e-9
    assert (ev.p_kw[~ev.connected] == 0).all()


# --- issue 18: honest KPIs ------------------------------------------------------------------


def test_ev_sessions_at_run_start_are_in_the_state_the_charging_rule_leaves_them():
    """A car that arrived before the run has charged at full rate since its arrival: at the
    first step it needs need - p_max * eta * (time since arrival), never the pro-rated need."""
    sc = small_scenario(start="2026-06-21T00:00:00Z", duration_s=120, seed=3,
                        fleet=[{"name": "ev", "kind": "ev", "count": 300,
                                "params": {"arrival_h_mean": 18.0, "energy_kwh_mean": 15.0}}])
    twin = Twin(sc)
    ev = twin.fleets["ev"]
    before = ev.sessions[ev.sessions[:, 1] < 0]
    twin.run_until(1.0)
    expect = np.zeros(ev.n)
    seen = set()
    for dev, arr_s, dep_s, need in before:  # sorted by arrival: the first session per car wins
        i = int(dev)
        if i in seen or dep_s <= 0:
            continue
        seen.add(i)
        expect[i] = max(0.0, need - ev.p_max_kw[i] * ev.eta[i] * (-arr_s) / 3600.0)
    charging = expect > 0
    assert ev.connected.sum() > 50  # the evening's cars are still plugged in at midnight
    assert charging.sum() < 0.2 * ev.connected.sum()  # but almost all of them are full
    assert ev.p_kw.sum() == pytest.approx(np.minimum(ev.p_max_kw, 3600 * expect / ev.eta)[charging].sum(), rel=1e-9)


@pytest.mark.parametrize("every_s", [15, 25, 60])
def test_summary_energies_balance_whatever_the_sampling(every_s):
    """timeseries_every_s that the device step does not divide is sampled at the nearest
    multiple, and integrated with that real interval: head = loads + sgens + DER + losses."""
    from twin.results import summarize

    sc = small_scenario(duration_s=1800, device_step_s=10, power_flow_interval_s=60,
                        outputs={"report": False, "timeseries_every_s": every_s},
                        fleet=[{"name": "pv", "kind": "pv", "count": 40, "params": {"p_peak_kw": 50}},
                               {"name": "bat", "kind": "battery", "count": 10}])
    twin = Twin(sc)
    twin.run()
    s = summarize(twin, 1.0)
    e = s["energy_kwh"]
    assert s["timeseries_interval_s"] == twin.rec_every * 10
    # the DER the power flow saw, integrated on the same samples, closes the balance exactly
    der_pf = float(np.nansum(twin.recorder.cols["der_pf_kw"])) * s["timeseries_interval_s"] / 3600
    lhs = e["head_import"]
    rhs = e["base_load"] + e["feeder_sgen"] + der_pf + e["losses"]
    assert abs(lhs - rhs) <= 1e-3 * abs(lhs)
    # and the device-integrated class energies agree with it within 0.1 % of the throughput
    assert abs(der_pf - (e["pv"] + e["battery"])) <= 1e-3 * (abs(e["pv"]) + abs(e["battery"])) + 0.5


def test_failed_power_flows_are_counted_reported_and_fail_the_run(tmp_path):
    """A feeder loaded far beyond what it carries: every interval fails. The run says so in one
    line, exits 1, counts the intervals, logs them, and writes no NaN to JSON."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    sc = tmp_path / "overload.yaml"
    sc.write_text("name: overload\nstart: 2026-06-21T18:00:00Z\nduration_s: 300\n"
                  "feeder: {kind: cigre_lv, base_load_scale: 40}\n"
                  "fleet: [{name: bat, kind: battery, count: 2}]\noutputs: {report: false}\n")
    r = subprocess.run([sys.executable, str(root / "gridtwin_cli.py"), "run", str(sc), "--out",
                        str(tmp_path / "runs"), "--quiet"], capture_output=True, text=True, cwd=root,
                       timeout=600, check=False)
    assert r.returncode == 1, r.stderr
    err = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and err[0].startswith("POWER FLOW FAILED: 5 of 5 intervals"), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    (out,) = [p for p in (tmp_path / "runs").iterdir() if p.is_dir()]

    def no_nan(x):
        raise ValueError(f"non-finite number in JSON: {x}")

    s = json.loads((out / "summary.json").read_text(), parse_constant=no_nan)
    assert s["power_flow"]["failed_intervals"] == 5
    assert s["power_flow"]["unsolved_h"] == pytest.approx(300 / 3600, abs=1e-5)
    assert s["energy_kwh"]["head_import"] == 0.0 and s["voltage"]["min_pu"] is None
    events = [json.loads(ln, parse_constant=no_nan) for ln in (out / "events.jsonl").read_text().splitlines()]
    assert len([e for e in events if e["kind"] == "power_flow_failed"]) == 5


def test_base_load_noise_wanders_with_a_correlation_time():
    """noise_pct is per load, with the documented std, and correlated over ~15 min (AR(1)), not
    redrawn independently every power flow."""
    twin = Twin(small_scenario(base_load={"profile": "flat", "noise_pct": 5.0}))
    draws = np.array([twin.base_load_noise() for _ in range(4000)])  # 60 s apart
    x = draws - 1.0
    assert x.std() == pytest.approx(0.05, rel=0.1)
    lag1 = np.mean([np.corrcoef(x[:-1, j], x[1:, j])[0, 1] for j in range(x.shape[1])])
    assert lag1 == pytest.approx(np.exp(-60 / 900), abs=0.03)


def test_feeder_pv_and_fleet_pv_share_one_model_and_wind_follows_its_power_curve(tmp_path):
    """The feeder's own PV sgens produce what a fleet inverter of the same rating produces
    (efficiency, temperature derating); its wind sgen follows the power curve of the weather's
    wind speed (CSV column wind_speed_m_s, or synthetic around a mean) instead of a fixed 50 %;
    the power flow sees exactly that."""
    from types import SimpleNamespace

    from twin.fleet.pv import pv_ac_kw
    from twin.weather import Weather, wind_power_pu

    csv = tmp_path / "weather.csv"
    rows = ["time,ghi_w_m2,t_out_c,wind_speed_m_s"]
    for k in range(12):
        rows.append(f"2026-06-21T11:{k * 5:02d}:00Z,{700 + 10 * k},{25 + k * 0.5},{2 + 1.5 * k}")
    rows.append("2026-06-21T12:00:00Z,820,31,20")
    csv.write_text("\n".join(rows) + "\n")
    twin = Twin(small_scenario(duration_s=600, weather={"kind": "csv", "path": str(csv)}))
    sg = twin.net.sgen
    pv_rows = sg.type.str.upper().str.contains("PV").to_numpy()
    wind_rows = sg.type.str.upper().isin(["WP", "WT"]).to_numpy()
    rated = sg.p_mw.to_numpy() * 1000.0
    assert pv_rows.sum() == 8 and wind_rows.sum() == 1
    for ghi, t_out, wind in [(900.0, 30.0, 2.0), (500.0, 10.0, 8.0), (1000.0, 35.0, 13.0), (800, 20, 26.0)]:
        amb = Ambient(0.0, ghi, t_out, 12.0, wind)
        out = twin.feeder_sgen_kw(amb)
        fleet = PvFleet(FleetGroup(name="x", kind="pv", count=int(pv_rows.sum()),
                                   params={"p_peak_kw": 1.0, "s_rated_kva": 1.0}),
                        np.zeros(int(pv_rows.sum()), dtype=int), np.random.default_rng(0))
        fleet.step(1.0, amb)
        assert out[pv_rows] == pytest.approx(fleet.p_avail_kw * rated[pv_rows], rel=1e-12)
        assert out[pv_rows].sum() < rated[pv_rows].sum() * ghi / 1000.0  # losses, not GHI x rating
        assert out[wind_rows] == pytest.approx(rated[wind_rows] * float(wind_power_pu(wind)))
    assert wind_power_pu([2.9, 12.0, 18.0, 25.0]).tolist() == [0.0, 1.0, 1.0, 0.0]
    assert pv_ac_kw(10.0, 10.0, 0.0, 20.0) == 0.0
    # no wind source: the legacy half rating
    assert twin.feeder_sgen_kw(Ambient(0.0, 0.0, 20.0, 12.0))[wind_rows] == pytest.approx(0.5 * rated[wind_rows])
    seen = []

    def check(tw):
        if tw.step_index % tw.pf_every == 0:
            seen.append((tw.grid.result.sgen_p_kw, -tw.feeder_sgen_kw(tw.ambient).sum(), tw.ambient.wind_m_s))

    twin.after_step.append(check)
    twin.run()
    seen = np.array(seen)
    assert len(seen) == 10
    assert seen[:, 0] == pytest.approx(seen[:, 1], rel=1e-9)
    assert seen[:, 2] == pytest.approx(2 + 1.5 * np.arange(10) / 5, rel=1e-9)  # the CSV's wind, interpolated
    spec = SimpleNamespace(kind="synthetic", latitude_deg=48.0, longitude_deg=11.0, cloudiness=0.2,
                           t_out_mean_c=20.0, t_out_swing_c=8.0, wind_mean_m_s=6.0)
    w = Weather(spec, twin.scenario.start, 86400.0, 1, None).wind
    assert w.min() >= 0 and 4.0 < w.mean() < 8.0 and w.std() > 0.5  # synthetic, around 6 m/s


def test_batched_device_steps_equal_the_one_step_loop():
    """Quiet stretches between power flows, samples and events run as one call per fleet (one
    TCL kernel call for k steps): same timeseries to float tolerance and same events as the
    one-step loop, on a run with the controller, a DR event, EV sessions and TCL switching."""
    from pathlib import Path

    import yaml

    from hil.direct import attach_controller

    d = yaml.safe_load(Path("scenarios/tcl_dr_hot_afternoon.yaml").read_text())
    d.update(start="2026-07-15T13:05:00Z", duration_s=1500, assertions=[],
             outputs={"timeseries_every_s": 60, "report": False})
    d["fleet"][0]["count"] = 300
    d["fleet"].append({"name": "ev", "kind": "ev", "count": 30,  # local 14:05-14:30; some leave in a batch
                       "params": {"arrival_h_mean": 14.1, "arrival_h_std": 0.2, "dwell_h_mean": 0.5,
                                  "dwell_h_std": 0.1}})
    d["fleet"].append({"name": "pv", "kind": "pv", "count": 40})
    d["fleet"].append({"name": "bat_small", "kind": "battery", "count": 5,  # fills up inside a batch
                       "params": {"e_cap_kwh": 1.0, "p_max_kw": 5.0, "soc_init_pct": 60}})
    d["dr_events"][0]["duration_s"] = 600
    runs = []
    batches = []

    def writes(tw):  # setpoints written by a process (an event), the same instants in both runs
        yield tw.env.timeout(302)
        tw.fleets["bat_small"].write("p_set_kw", slice(None), 5.0)
        tw.fleets["pv"].write("p_limit_pct", slice(0, 20), 30.0)
        yield tw.env.timeout(400)
        tw.fleets["bat_small"].write("p_set_kw", slice(None), -5.0)

    for batch in (False, True):
        tw = Twin(Scenario.model_validate(d))
        tw.batch = batch
        acs = tw.fleets["acs"]
        one = acs.advance
        acs.advance = lambda dt, ambs, one=one: (batches.append(len(ambs)), one(dt, ambs))
        tw.env.process(writes(tw))
        att = attach_controller(tw)
        tw.run_until(tw.end_s)  # run() splits into 200 progress chunks: too short to batch here
        att.finish(tw)
        runs.append(tw)
    assert len(batches) > 20 and sum(batches) > 0.7 * 1500 / 4  # most steps ran batched
    assert max(batches) == 14  # 60 s controller cycle / 4 s step, less the cycle's own step
    a, b = runs
    assert a.step_index == b.step_index == 1500 // 4
    assert b.fleets["acs"].steps == a.fleets["acs"].steps
    ca, cb = a.recorder.cols, b.recorder.cols
    assert set(ca) == set(cb) and len(ca["t_s"]) == 25
    for k in ca:
        if k == "time":
            assert ca[k] == cb[k]
            continue
        np.testing.assert_allclose(np.asarray(cb[k], float), np.asarray(ca[k], float), rtol=1e-9, atol=1e-9,
                                   err_msg=k)
    assert [(e["kind"], round(e["t_s"], 6)) for e in a.events.events] == \
        [(e["kind"], round(e["t_s"], 6)) for e in b.events.events]
    for name in a.fleets:
        assert b.fleets[name].energy_kwh == pytest.approx(a.fleets[name].energy_kwh, rel=1e-9, abs=1e-9)
    tcl = a.fleets["acs"]
    assert tcl.switches.sum() > 300  # TCLs really switched (thermostat and DR hold-offs)
    assert any(e["kind"] == "dr_event_start" for e in a.events.events)
    assert a.fleets["ev"].delivered_kwh > 1.0  # EV sessions really charged
    assert a.fleets["ev"].unmet_kwh > 0.0  # ... and some left before they were full
    assert b.fleets["ev"].unmet_kwh == pytest.approx(a.fleets["ev"].unmet_kwh, rel=1e-9)
    assert b.fleets["pv"].curtailed_kwh == pytest.approx(a.fleets["pv"].curtailed_kwh, rel=1e-9)
    assert a.fleets["pv"].curtailed_kwh > 0.1  # the limit really cut
    sm_a, sm_b = a.fleets["bat_small"], b.fleets["bat_small"]
    assert sm_a.throughput_kwh > 0.5  # they really charged/discharged (1 kWh units, 5 kW)
    np.testing.assert_allclose(sm_b.soc_kwh, sm_a.soc_kwh, rtol=1e-12)
    assert sm_b.throughput_kwh == pytest.approx(sm_a.throughput_kwh, rel=1e-9)


def test_scenario_wind_mean_drives_the_feeder_wind_generator():
    """`weather.wind_mean_m_s` (scenario field) reaches the twin: the wind sgen follows the power
    curve of the synthetic wind around that mean; unset, it stays at the legacy half rating."""
    from twin.weather import wind_power_pu

    calm = Twin(small_scenario(duration_s=600, weather={"wind_mean_m_s": 2.0}))
    gusty = Twin(small_scenario(duration_s=600, weather={"wind_mean_m_s": 9.0}))
    unset = Twin(small_scenario(duration_s=600))
    assert unset.weather.wind is None
    assert 1.0 < calm.weather.wind.mean() < 3.0 and 6.0 < gusty.weather.wind.mean() < 12.0
    wind_rows = calm.net.sgen.type.str.upper().isin(["WP", "WT"]).to_numpy()
    rated = calm.net.sgen.p_mw.to_numpy()[wind_rows] * 1000.0
    for tw in (calm, gusty):
        amb = tw._ambient(0.0)
        assert tw.feeder_sgen_kw(amb)[wind_rows] == pytest.approx(rated * float(wind_power_pu(amb.wind_m_s)))
    assert gusty.feeder_sgen_kw(gusty._ambient(0.0))[wind_rows].sum() > calm.feeder_sgen_kw(calm._ambient(0.0))[wind_rows].sum()
