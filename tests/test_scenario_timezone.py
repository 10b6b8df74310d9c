"""Scenario `timezone`: load shapes, flex loads, EV arrivals and TOU price hours are local clock
time in the scenario's IANA zone (daylight saving included), in the twin and in the
controller's own price view; sun and temperature stay on solar time."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
import yaml

from scenarios.load import ScenarioError, load_scenario
from tests.scenario_input import gridtwin, write
from twin.profiles import LocalClock, load_shape, load_shapes

TOU = {"kind": "tou", "base_eur_per_mwh": 80,
       "periods": [{"start_h": 17, "end_h": 21, "price_eur_per_mwh": 180}]}


def scenario(tmp_path, tz: str | None, start: str, duration_s: float, fleet=(), controller=False):
    doc = {"name": "tz", "start": start, "duration_s": duration_s, "device_step_s": 900,
           "power_flow_interval_s": 3600, "feeder": {"kind": "cigre_mv"},
           "base_load": {"profile": "residential", "noise_pct": 0}, "prices": TOU,
           "fleet": list(fleet), "outputs": {"timeseries_every_s": 3600, "report": False}}
    if tz is not None:
        doc["timezone"] = tz
    if controller:
        doc["controller"] = {"enabled": True, "cycle_s": 900, "optimize_every_s": 3600}
    return load_scenario(write(tmp_path, yaml.safe_dump(doc), "tz.yaml"))


def utc_h(t_epoch) -> float:
    d = datetime.fromtimestamp(float(t_epoch), UTC)
    return d.hour + d.minute / 60


def test_base_load_peaks_at_the_local_evening_hour_in_a_run(tmp_path):
    """Residential shape peaks at 19:00 local clock: 17:00 UTC in Berlin in June (UTC+2),
    23:00 UTC in New York (UTC-4), 19:00 UTC without a timezone (the default, UTC)."""
    from twin.simulation import Twin

    peaks = {}
    for tz, want_utc_h in ((None, 19.0), ("Europe/Berlin", 17.0), ("America/New_York", 23.0)):
        s = scenario(tmp_path, tz, "2026-06-21T00:00:00Z", 86400)
        tw = Twin(s)
        tw.run()
        cols = tw.recorder.cols
        t = np.asarray(cols["t_s"])
        base = np.asarray(cols["base_load_kw"], float)
        peaks[tz] = float(t[int(np.argmax(base))]) / 3600.0
        assert peaks[tz] == want_utc_h, (tz, peaks)
    assert s.timezone == "America/New_York"


def test_flex_loads_and_ev_arrivals_follow_the_local_clock(tmp_path):
    from twin.simulation import Twin

    fleet = [{"name": "flex", "kind": "flex_load", "count": 3},
             {"name": "ev", "kind": "ev", "count": 200, "params": {"arrival_h_mean": 18, "arrival_h_std": 0.01}}]
    arrivals = {}
    for tz in ("UTC", "Asia/Tokyo"):  # UTC+9, no DST
        tw = Twin(scenario(tmp_path, tz, "2026-06-21T00:00:00Z", 86400, fleet))
        amb = tw._ambient(3600.0 * 8)  # 08:00 UTC
        assert amb.hour_of_day == pytest.approx(8.0 if tz == "UTC" else 17.0)
        flex = tw.fleets["flex"]
        flex.step(900.0, amb)
        # residential shape: 0.66 at 07:00, 0.62 at 08:00, 0.78 at 17:00 (local)
        assert flex.p_base_kw == pytest.approx(flex.p_nom_kw * (0.62 if tz == "UTC" else 0.78))
        ev = tw.fleets["ev"]
        arr = ev.sessions[:, 1]
        arrivals[tz] = float(np.median(arr[(arr >= 0) & (arr < 86400)])) / 3600.0
    assert arrivals["UTC"] == pytest.approx(18.0, abs=0.05)
    assert arrivals["Asia/Tokyo"] == pytest.approx(9.0, abs=0.05)  # 18:00 JST = 09:00 UTC


def test_tou_hours_are_local_in_the_twin_and_in_both_controller_views(tmp_path, monkeypatch):
    """17-21 local in Berlin (CEST) is 15-19 UTC: the twin's prices and the price function each
    controller wiring hands to controller.assembly.assemble (in-process: hil.direct; HIL
    controller process: hil.controller_adapter, which gets the scenario as JSON) agree."""
    import controller.assembly
    import hil.controller_adapter
    from hil.controller_adapter import HilController
    from hil.direct import attach_controller
    from twin.simulation import Twin

    handed = []
    real = controller.assembly.assemble

    def spy(*args, **kw):  # the real assemble, noting the price function it was given
        handed.append(args[6] if len(args) > 6 else kw["price_fn"])
        return real(*args, **kw)

    monkeypatch.setattr(controller.assembly, "assemble", spy)
    monkeypatch.setattr(hil.controller_adapter, "assemble", spy)
    fleet = [{"name": "bat", "kind": "battery", "count": 2}]
    s = scenario(tmp_path, "Europe/Berlin", "2026-06-21T00:00:00Z", 3600, fleet, controller=True)
    t0 = s.start.timestamp()
    times = t0 + np.array([14.99, 15.0, 18.99, 19.0, 20.99, 21.0]) * 3600
    want = [80, 180, 180, 80, 80, 80]
    tw = Twin(s)
    assert [tw.prices.at(float(x) - t0) for x in times] == want
    attach_controller(tw)
    init = {"scenario": s.model_dump(mode="json"), "start_epoch": t0, "endpoints": [],
            "state_dir": str(tmp_path / "state")}
    hil = HilController(init, link_factory=lambda endpoints, clock: {})
    assert hil.s.timezone == "Europe/Berlin"
    assert len(handed) == 2
    for price_fn in handed:
        assert list(price_fn(times)) == want
    # without a timezone the same file is UTC clock time (results of older scenarios unchanged)
    s_utc = scenario(tmp_path, None, "2026-06-21T00:00:00Z", 3600, fleet, controller=True)
    assert [Twin(s_utc).prices.at(float(x) - t0) for x in times] == [80, 80, 180, 180, 180, 80]


def test_daylight_saving_days_have_23_and_25_local_hours(tmp_path):
    """Berlin: clocks go 02:00 -> 03:00 on 2026-03-29 (01:00 UTC) and 03:00 -> 02:00 on
    2026-10-25 (01:00 UTC). A 48 h run over the spring change: the evening peak and the TOU
    window move one hour earlier in UTC on the second day."""
    from twin.simulation import Twin

    c = LocalClock(datetime(2026, 3, 29, 0, 0, tzinfo=UTC), "Europe/Berlin")
    assert [c.hour(h * 3600) for h in (0, 0.5, 0.999, 1, 1.5, 22, 23)] == pytest.approx(
        [1, 1.5, 1.999, 3, 3.5, 0, 1])  # 1:59:56 -> 3:00, 22:00 UTC is local midnight
    # local midnight to local midnight: 23 h of UTC
    assert c.hour(-3600) == 0.0 and c.hour(22 * 3600) == 0.0
    f = LocalClock(datetime(2026, 10, 25, 0, 0, tzinfo=UTC), "Europe/Berlin")
    hours = [f.hour(m * 60) for m in range(0, 180, 30)]  # 00:00 .. 02:30 UTC
    assert hours == pytest.approx([2, 2.5, 2, 2.5, 3, 3.5])  # 02:00-03:00 local twice
    assert f.hour(-2 * 3600) == 0.0 and f.hour(23 * 3600) == 0.0  # 22:00 UTC .. 23:00 UTC: 25 h

    s = scenario(tmp_path, "Europe/Berlin", "2026-03-28T00:00:00Z", 2 * 86400)
    tw = Twin(s)
    t0 = s.start.timestamp()
    tou_start = [next(h for h in np.arange(d * 24, d * 24 + 24, 0.25)
                      if tw.prices.at(h * 3600) == 180) - d * 24 for d in (0, 1)]
    assert tou_start == [16.0, 15.0]  # 17:00 CET = 16 UTC, 17:00 CEST = 15 UTC
    tw.run()
    base = np.asarray(tw.recorder.cols["base_load_kw"], float)
    day = len(base) // 2
    peak_utc = [utc_h(t0 + int(np.argmax(base[:day])) * 3600),
                utc_h(t0 + 86400 + int(np.argmax(base[day:])) * 3600)]
    assert peak_utc == [18.0, 17.0]


@pytest.mark.parametrize("zone", ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "UTC"])
def test_batched_local_hours_equal_the_one_instant_clock_across_dst(zone):
    """A device batch asks the clock for many instants at once; across both 2026 Berlin
    transitions (and Lord Howe's 30-minute one) every hour is the one-instant value, bit for bit."""
    rng = np.random.default_rng(3)
    for day in (datetime(2026, 3, 28, tzinfo=UTC), datetime(2026, 10, 24, tzinfo=UTC)):
        t = np.sort(np.r_[np.arange(0.0, 3 * 86400.0, 7.0), rng.uniform(0, 3 * 86400.0, 2000)])
        clock = LocalClock(day, zone)
        one = np.array([clock.hour(float(x)) for x in t])
        batch = LocalClock(day, zone).hours(t)
        assert np.array_equal(one, batch)
        assert np.array_equal(load_shapes("residential", batch),
                              [load_shape("residential", h) for h in one])


def test_unknown_timezone_is_a_one_line_error_exit_2(tmp_path, capsys):
    with pytest.raises(ScenarioError) as e:
        scenario(tmp_path, "Europe/Berln", "2026-06-21T00:00:00Z", 600)
    msg = str(e.value)
    assert "timezone: unknown IANA time zone" in msg and "'Europe/Berln'" in msg and "\n" not in msg
    for bad in ("../../etc/passwd", "", "+02:00"):
        with pytest.raises(ScenarioError, match="timezone"):
            scenario(tmp_path, bad, "2026-06-21T00:00:00Z", 600)
    rc, out, err = gridtwin(capsys, "validate", tmp_path / "tz.yaml")
    assert rc == 2 and err.count("\n") == 1 and "timezone" in err
