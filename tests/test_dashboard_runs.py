"""Run viewer in a real headless Chromium: opens two finished runs, shows KPIs side by side."""

import os
from pathlib import Path

import pytest
from browser import CHROMEDRIVER, CHROMIUM, chromium, serve_dash, text_when, wait_for

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
    from dashboard.run_view import delta, kpi_table, natural_key, series_frame

    (s1, o1), (s2, o2) = two_runs
    runs = [load_run(o1), load_run(o2)]
    rows, cols = kpi_table(runs)
    pv = {r["kpi"]: r for r in rows}["energy_kwh.pv"]
    a, b = s1["energy_kwh"]["pv"], s2["energy_kwh"]["pv"]
    assert float(pv[o1.name].replace(",", "")) == pytest.approx(a, rel=1e-4)
    assert float(pv["difference"].replace(",", "")) == pytest.approx(b - a, rel=1e-3)
    assert pv["difference"].startswith("-")  # eight times the PV generates more (negative = generation)
    assert [c["name"] for c in cols][-2:] == ["Δ (B − A)", "Δ %"]
    # float noise reads 0, not -1.0267342531
    assert delta(-1.0267342531, -1.0267342531 - 1.03e-12) == ("0", "0 %")
    assert all(len(r.get("difference", "")) <= 12 for r in rows)  # fits its column
    assert sorted(["v_pu.bus10", "v_pu.bus2"], key=natural_key) == ["v_pu.bus2", "v_pu.bus10"]
    df = series_frame(runs, ["head_p_kw"])
    assert set(df["run"]) == {o1.name, o2.name} and len(df) == 20 and df["t_s"].max() == 540.0


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium/chromium-driver not installed")
def test_run_viewer_in_browser(two_runs):
    from selenium.webdriver.common.by import By

    from dashboard.app import create_app

    (_, o1), (_, o2) = two_runs
    app = create_app(run_dirs=[o1, o2])
    with serve_dash(app) as url, chromium() as drv:
        drv.get(url)
        wait_for(drv, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#run-timeseries .scatterlayer .trace")) >= 6,
                 what="6 timeseries traces (3 series x 2 runs)")
        wait_for(drv, lambda d: "energy_kwh.pv" in d.find_element(By.ID, "run-kpis").text, what="KPI table")
        xaxis = drv.execute_script("return document.querySelector('#run-timeseries .js-plotly-plot').layout.xaxis")
        assert xaxis["title"]["text"] == "time since start (h)"
        x0 = drv.execute_script("return document.querySelector('#run-timeseries .js-plotly-plot').data.map(t => t.x[0])")
        assert set(x0) == {0}  # both runs start at 0 h on the relative axis
        assert drv.find_elements(By.CSS_SELECTOR, "#run-kpis .export")  # CSV export of the KPI table
        kpis = text_when(drv, "run-kpis", lambda t: o1.name in t and o2.name in t, what="both runs")
        assert o1.name in kpis and o2.name in kpis
        events = text_when(drv, "run-events", lambda t: "dr_event_start" in t, what="events")
        assert "dr_event_start" in events and "ev2" in events
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / "dashboard_runs.png"))


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium/chromium-driver not installed")
def test_sweep_viewer_in_browser(tmp_path):
    """A sweep's results table (the shape gridtwin sweep writes) as table + KPI-vs-parameter scatter."""
    import pandas as pd
    from selenium.webdriver.common.by import By

    from dashboard.app import create_app
    from dashboard.sweep_view import axes, load_sweep

    d = tmp_path / "pv_quick-20260101T000000Z"
    d.mkdir()
    pd.DataFrame({"point": [0, 0, 1, 1], "replicate": [0, 1, 0, 1], "seed": [5, 6, 5, 6],
                  "fleet[rooftop_pv].count": [20, 20, 60, 60],
                  "voltage.max_pu": [1.0412345678, 1.0398, 1.0701, 1.0689],
                  "energy_kwh.pv": [-120.5, -118.0, -360.2, -355.9], "status": ["ok"] * 4, "error": [""] * 4,
                  "wall_s": [3.1, 3.0, 4.2, 4.0]}).to_parquet(d / "results.parquet")
    params, kpis = axes(load_sweep(d)[1])
    assert params == ["fleet[rooftop_pv].count"] and kpis == ["energy_kwh.pv", "voltage.max_pu"]
    app = create_app(sweep_dirs=[d])
    with serve_dash(app) as url, chromium() as drv:
        drv.get(url)
        wait_for(drv, lambda d_: "1.0412" in d_.find_element(By.ID, "sweep-table").text, what="sweep table")
        assert "1.0412345678" not in drv.find_element(By.ID, "sweep-table").text  # formatted
        xs = wait_for(drv, lambda d_: d_.execute_script(
            "const g = document.querySelector('#sweep-scatter .js-plotly-plot');"
            "return g && g.data && g.data.length ? g.data.map(t => Array.from(t.x)) : null;"), what="scatter")
        assert xs == [[20, 60], [20, 60]]  # one trace per replicate, x = the PV count
        assert drv.find_elements(By.CSS_SELECTOR, "#sweep-table .export")
