"""Run viewer in a real headless Chromium: opens two finished runs, shows KPIs side by side."""

import os
from pathlib import Path

import pytest

from browser import CHROMEDRIVER, CHROMIUM, chromium, serve_dash, wait_for

ARTIFACTS = Path(os.environ.get("GRIDTWIN_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))

SCENARIO = """
name: viewer{n}
start: 2026-06-21T11:00:00Z
duration_s: 600
seed: {n}
feeder: {{kind: cigre_lv}}
fleet: [{{name: pv, kind: pv, count: {count}, params: {{p_peak_kw: 8, s_rated_kva: 8}}}}]
dr_events: [{{id: ev{n}, start: 2026-06-21T11:02:00Z, duration_s: 120, reduction_kw: 5}}]
outputs: {{report: false}}
"""


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    from hil.runner import run_scenario
    from scenarios.load import load_scenario

    root = tmp_path_factory.mktemp("runs")
    outs = []
    for n, count in [(1, 5), (2, 40)]:
        sc = root / f"s{n}.yaml"
        sc.write_text(SCENARIO.format(n=n, count=count))
        summary, out = run_scenario(load_scenario(sc), out_root=root / "out", quiet=True)
        outs.append((summary, out))
    return outs


def test_kpi_comparison_table(two_runs):
    from dashboard.run_data import load_run
    from dashboard.run_view import kpi_table

    (s1, o1), (s2, o2) = two_runs
    rows, cols = kpi_table([load_run(o1), load_run(o2)])
    pv = {r["kpi"]: r for r in rows}["energy_kwh.pv"]
    assert pv[o1.name] == s1["energy_kwh"]["pv"] and pv[o2.name] == s2["energy_kwh"]["pv"]
    assert pv["difference"] == pytest.approx(s2["energy_kwh"]["pv"] - s1["energy_kwh"]["pv"])
    assert pv["difference"] < 0  # eight times the PV generates more (negative = generation)


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium/chromium-driver not installed")
def test_run_viewer_in_browser(two_runs):
    from selenium.webdriver.common.by import By

    from dashboard.app import create_app

    (s1, o1), (s2, o2) = two_runs
    app = create_app(run_dirs=[o1, o2])
    with serve_dash(app) as url, chromium() as drv:
        drv.get(url)
        wait_for(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#run-timeseries .scatterlayer .trace")) >= 6,
                 what="6 timeseries traces (3 series x 2 runs)")
        wait_for(drv, lambda d: "energy_kwh.pv" in d.find_element(By.ID, "run-kpis").text, what="KPI table")
        kpis = drv.find_element(By.ID, "run-kpis").text
        assert o1.name in kpis and o2.name in kpis
        events = drv.find_element(By.ID, "run-events").text
        assert "dr_event_start" in events and "ev2" in events
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / "dashboard_runs.png"))
