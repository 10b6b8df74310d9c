"""report.html of a real run, opened in headless Chromium: separate figures (voltage band with
limit lines and the worst buses by feeder name, head, classes, DR panel, violations), KPI
tables with groups and assertions, plotly.js referenced from beside the runs, under 1 MB."""

import json
import os
from pathlib import Path

import pytest
from browser import CHROMEDRIVER, CHROMIUM, chromium, wait_for

ARTIFACTS = Path(os.environ.get("GRIDTWIN_ARTIFACTS", Path(__file__).resolve().parent.parent / "artifacts"))

SCENARIO = """
name: report_e2e
start: 2026-06-21T11:00:00Z
duration_s: 3600
seed: 5
feeder: {kind: cigre_lv, limits: {v_min_pu: 0.95, v_max_pu: 1.01}}
fleet:
  - {name: rooftop_pv, kind: pv, count: 30, placement: {rule: load_buses}, params: {p_peak_kw: 12, s_rated_kva: 12}}
  - {name: home_batteries, kind: battery, count: 5, params: {e_cap_kwh: 10, p_max_kw: 4}}
dr_events: [{id: noon_dr, start: 2026-06-21T11:20:00Z, duration_s: 900, reduction_kw: 6}]
assertions:
  - {kpi: violations.minutes, op: ">", value: 0}
  - {kpi: voltage.max_pu, op: "<", value: 1.0}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from hil.runner import run_scenario
    from scenarios.load import load_scenario

    root = tmp_path_factory.mktemp("rep")
    (root / "s.yaml").write_text(SCENARIO)
    summary, out = run_scenario(load_scenario(root / "s.yaml"), out_root=root / "runs", quiet=True)
    return summary, out


def test_report_is_small_and_references_plotly_once(run):
    summary, out = run
    page = (out / "report.html").read_text()
    assert (out / "report.html").stat().st_size < 1_000_000
    js = list(out.parent.glob("plotly-*.min.js"))
    assert len(js) == 1 and js[0].stat().st_size > 1_000_000  # the library lives once, beside the runs
    assert f"src='../{js[0].name}'" in page and "function(t,e)" not in page[:200_000]
    # KPI tables: groups, assertions (one passes, one fails), UTC
    assert "Fleet groups" in page and "rooftop_pv" in page and "home_batteries" in page
    assert "Assertions (1 passed, 1 failed)" in page and "FAILED" in page
    assert "UTC" in page and "Worst buses" in page
    assert summary["violations"]["minutes"] > 0


@pytest.mark.skipif(not (CHROMIUM and CHROMEDRIVER), reason="Debian chromium/chromium-driver not installed")
def test_report_figures_in_browser(run):
    _, out = run
    with chromium(1300, 3800) as drv:
        drv.get((out / "report.html").as_uri())
        wait_for(drv, lambda d: d.execute_script("return document.querySelectorAll('.js-plotly-plot').length") >= 6,
                 what="six or more separate figures")
        figs = drv.execute_script(
            "return Array.from(document.querySelectorAll('.fig')).map(f => {const g = f.querySelector('.js-plotly-plot');"
            " return {id: f.id, title: g.layout.title.text, y: (g.layout.yaxis.title || {}).text,"
            " x: (g.layout.xaxis.title || {}).text, names: g.data.map(t => t.name),"
            " shapes: (g.layout.shapes || []).map(s => [s.type, s.y0])}})")
        by = {f["id"]: f for f in figs}
        assert {"fig-voltage", "fig-head", "fig-violations", "fig-dr-noon_dr", "fig-class-rooftop_pv",
                "fig-class-home_batteries"} <= set(by)
        assert all(f["x"] == "time (UTC)" and f["y"] for f in figs)  # every axis titled, with units
        v = by["fig-voltage"]
        assert v["y"] == "voltage (pu)"
        assert ["line", 0.95] in v["shapes"] and ["line", 1.01] in v["shapes"]  # limit lines
        assert any(s[0] == "rect" for s in v["shapes"])  # DR / violation shading
        # the worst buses by the feeder's own names (CIGRE LV: "Bus R11" ...), not by index
        bus_names = [n for n in v["names"] if n and n.startswith(("highest", "lowest"))]
        assert len(bus_names) == 2 and all("Bus" in n for n in bus_names), v["names"]
        assert "requested 6 kW" in by["fig-dr-noon_dr"]["title"]
        assert any("requested reduction" in n for n in by["fig-dr-noon_dr"]["names"])
        assert len(by["fig-voltage"]["names"]) < 12  # a band, not 44 bus entries
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(ARTIFACTS / "report.png"))
    assert json.loads((out / "summary.json").read_text())["groups"]


def test_end_of_run_lines_name_dr_energy_and_assertions(run):
    from twin.report import end_of_run_lines

    summary, out = run
    text = "\n".join(end_of_run_lines(summary, out))
    assert "assertions: 1 passed, 1 failed" in text
    assert "energy (kWh, load +): " in text and f"pv {summary['energy_kwh']['pv']:,.1f}" in text
    assert f"report: {out / 'report.html'}" in text
    fake = {**summary, "dr": {"noon_dr": {"requested_kw": 6.0, "assessed_delivered_kw": 5.4,
                                          "assessed_delivery_pct": 90.0, "status": "completed"}}}
    assert "  DR noon_dr: 5.4 of 6.0 kW delivered (90 %), completed" in end_of_run_lines(fake, out)
