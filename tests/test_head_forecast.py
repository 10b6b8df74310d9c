"""Head-load forecast from the controller's own metering, and peak shaving against it."""

from datetime import datetime

import numpy as np

from controller.forecasting.head import DAY_S, HeadLoadForecast
from controller.historian import Historian
from controller.links.base import DeviceInfo
from controller.scheduling import FleetScheduler
from controller.state import FleetState, empty_group

T0 = 1_768_435_200.0  # 2026-01-15 00:00 UTC


def profile_kw(t):
    """Feeder head without batteries: 300 kW base, an evening peak to 500 kW 17:00-20:00."""
    h = (np.asarray(t, float) % DAY_S) / 3600.0
    return 300.0 + 200.0 * ((h >= 17) & (h < 20))


def fleet(t, head_kw, bat_kw=0.0, n_bat=4):
    bi = [DeviceInfo(f"bat/{i}", "bat", "battery", 1, {"p_max_kw": 25.0, "e_cap_kwh": 100.0}) for i in range(n_bat)]
    g = empty_group("bat", bi)
    g.values.update(soc_kwh=np.full(n_bat, 90.0), p_kw=np.full(n_bat, bat_kw / n_bat))
    g.quality.update(soc_kwh=np.zeros(n_bat, np.int8), p_kw=np.zeros(n_bat, np.int8))
    m = empty_group("meter", [DeviceInfo("meter/0", "meter", "meter", 0)])
    m.values["p_kw"] = np.array([head_kw])
    m.quality["p_kw"] = np.zeros(1, np.int8)
    return FleetState(t, {"bat": g, "meter": m})


def test_forecast_learns_the_daily_profile_and_falls_back_to_persistence():
    f = HeadLoadForecast()
    assert np.all(f([T0, T0 + 3600]) == 0.0)  # nothing seen yet
    f.observe(T0 + 10 * 3600, 321.0)
    assert np.all(f(T0 + DAY_S + np.arange(96) * 900.0) == 321.0)  # one sample: persistence
    f = HeadLoadForecast()
    for t in T0 + np.arange(2 * 96) * 900.0:  # two days, batteries discharging 40 kW at the meter
        assert f.observe_state(t, fleet(t, profile_kw(t) - 40.0, bat_kw=-40.0))
    times = T0 + 2 * DAY_S + np.arange(96) * 900.0
    assert np.allclose(f(times), profile_kw(times))  # batteries taken out: the uncontrolled head
    m = empty_group("meter", [DeviceInfo("meter/0", "meter", "meter", 0)])
    assert not f.observe_state(T0, FleetState(T0, {"meter": m}))  # no reading: nothing learnt


def test_peak_objective_shaves_the_forecast_evening_peak():
    f = HeadLoadForecast()
    for t in T0 + np.arange(2 * 96) * 900.0:
        f.observe(t, profile_kw(t))
    t_now = T0 + 2 * DAY_S + 6 * 3600.0  # 06:00 on day 3
    flat = lambda times: np.full(np.shape(times), 80.0)  # flat price: only the peak matters
    sched = FleetScheduler(flat, objective="peak", head_forecast=f).optimize(t_now, fleet(t_now, 300.0))
    times = sched["t0"] + 900.0 * np.arange(96)
    head = np.asarray(sched["data"]["head_p_kw"])
    forecast = profile_kw(times)
    assert forecast.max() == 500.0
    # four 25 kW batteries with 90 kWh each hold 3 h x 100 kW: the evening peak drops by ~100 kW
    assert head.max() < 500.0 - 0.9 * 100.0, head.max()
    battery = head - forecast
    evening = (((times % DAY_S) / 3600.0) >= 17) & (((times % DAY_S) / 3600.0) < 20)
    assert battery[evening].mean() < -90.0 and battery[~evening].max() < 101.0


def test_seed_from_historian_head_meter_rows(tmp_path):
    hist = Historian(tmp_path / "h.sqlite", "NORMAL")
    for n, t in enumerate(T0 + np.arange(96) * 900.0):
        hist.record_cycle(n + 1, t, {}, [("meter/0", "p_kw", float(profile_kw(t)), "good")], [], [], [], (0, 0, 0))
    f = HeadLoadForecast()
    assert f.seed(hist, T0 + DAY_S, "meter/0") == 96
    times = T0 + DAY_S + np.arange(96) * 900.0
    assert np.allclose(f(times), profile_kw(times))
    hist.close()


def test_restart_refills_pv_and_flex_group_profiles_from_device_telemetry(tmp_path):
    """The scheduler's per-group PV (p_avail_kw) and flexible-load (p_base_kw) profiles after a
    restart: group totals per recorded instant, instants where a device's row is missing left
    out, one mean per slot; TCL groups are not seeded (their baseline is a model's)."""
    hist = Historian(tmp_path / "h.sqlite", "NORMAL")
    ts = T0 + np.arange(0.0, DAY_S, 60.0)  # telemetry every 60 s for a day

    def pv_kw(t):  # per device: 0 at night, 4 kW around noon
        h = (np.asarray(t, float) % DAY_S) / 3600.0
        return np.clip(4.0 * np.sin(np.pi * (h - 6.0) / 12.0), 0.0, None)

    for n, t in enumerate(ts):
        rows = [(f"pv/{i}", "p_avail_kw", float(pv_kw(t)), "good") for i in range(3) if not (i == 2 and n % 7 == 0)]
        rows += [("flex/0", "p_base_kw", 2.0 + (t % DAY_S) / DAY_S, "good"), ("ac/0", "p_kw", 1.0, "good")]
        hist.record_cycle(n + 1, float(t), {}, rows, [], [], [], (0, 0, 0))
    s = FleetScheduler(lambda t: np.zeros(np.shape(t)))
    got = s.seed_profiles(hist, T0 + DAY_S, {"pv": ("pv", ["pv/0", "pv/1", "pv/2"]),
                                             "flex": ("flex_load", ["flex/0"]), "ac": ("tcl", ["ac/0"])})
    assert got == {"pv": 96, "flex": 96} and "ac" not in s.profiles
    slots = T0 + DAY_S + np.arange(96) * 900.0
    # each slot: the mean of its one-minute group totals of all 3 devices (never a 2-device total)
    whole = ts[np.arange(ts.size) % 7 != 0]
    want = np.array([np.mean(3.0 * pv_kw(whole[(whole >= t0) & (whole < t0 + 900.0)])) for t0 in slots - DAY_S])
    assert np.allclose(s.profiles["pv"](slots), want, rtol=1e-9, atol=1e-9)
    assert s.profiles["pv"](slots).max() > 11.0  # ~12 kW at noon
    assert np.allclose(s.profiles["flex"](slots), [np.mean(2.0 + ((t0 + 60.0 * np.arange(15)) % DAY_S) / DAY_S)
                                                   for t0 in slots - DAY_S])
    hist.close()


def test_profiles_follow_the_local_clock_across_daylight_saving():
    """An evening peak at 17:00-20:00 Berlin time, learnt the week before the 2026-03-29 change:
    the day after it, the peak is forecast at 15:00-18:00 UTC (CEST), not an hour late as
    quarter hours of UTC would have it."""
    from zoneinfo import ZoneInfo

    berlin = ZoneInfo("Europe/Berlin")

    def local_peak_kw(t):
        h = np.array([datetime.fromtimestamp(x, berlin).hour for x in np.atleast_1d(t)])
        return 300.0 + 200.0 * ((h >= 17) & (h < 20))

    week = 1_774_137_600.0 + np.arange(0.0, 7 * DAY_S, 900.0)  # 2026-03-22 .. 03-28 UTC (CET)
    local, utc = HeadLoadForecast(timezone="Europe/Berlin"), HeadLoadForecast()
    for t, p in zip(week, local_peak_kw(week)):
        local.observe(t, p)
        utc.observe(t, p)
    after = 1_774_828_800.0 + np.arange(0.0, DAY_S, 900.0)  # 2026-03-30 UTC, CEST
    assert np.array_equal(local(after), local_peak_kw(after))
    assert not np.array_equal(utc(after), local_peak_kw(after))  # an hour late in UTC slots
    assert np.array_equal(local(week), local_peak_kw(week))
