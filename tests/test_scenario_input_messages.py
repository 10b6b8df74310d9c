"""Issue 16, classes 6 and 7: every message names file, key path and value; several errors are
listed (up to a bound) on one line; validate's summary line formats durations as h:mm and
pluralises."""

import pytest
from scenario_input import TINY, assert_user_error, gridtwin, write


def test_several_errors_listed(capsys, tmp_path):
    text = TINY.replace("duration_s: 600", "duration_s: -5\nseed: -1").replace("count: 5", "count: lots")
    path = write(tmp_path, text)
    rc, _, err = gridtwin(capsys, "validate", path)
    line = assert_user_error(rc, err, path, "duration_s: Input should be greater than 0 (got -5)",
                             "seed: Input should be greater than or equal to 0 (got -1)",
                             "fleet[0].count: Input should be a valid integer", "'lots'")
    assert "more" not in line


def test_errors_beyond_the_bound_are_counted(capsys, tmp_path):
    extra = "".join(f"bogus{i}: {i}\n" for i in range(9))
    path = write(tmp_path, TINY + extra)
    rc, _, err = gridtwin(capsys, "validate", path)
    line = assert_user_error(rc, err, path, "bogus0: Extra inputs are not permitted (got 0)", "; and 4 more")
    assert line.count("Extra inputs") == 5


@pytest.mark.parametrize("old, new, expected", [
    ("count: 5}", ("count: 5}\ndr_events: [{id: e, start: 2026-06-21T10:01:00Z, duration_s: 60, reduction_kw: 5, "
                   "groups: [pvv]}]"), "dr_events[0].groups[0]: unknown fleet group 'pvv'; fleet groups: pv"),
    ("count: 5}", "count: 5}\nfaults: [{at_s: 10, duration_s: 5, kind: drop, target: 'pv:7'}]",
     "faults[0].target: index must be 0..4 (got 'pv:7')"),
    ("count: 5}", "count: 5}\nfaults: [{at_s: 10, duration_s: 5, kind: drop, target: meters}]",
     "faults[0].target: names no fleet group; fleet groups: pv (or 'meter', 'rtu') (got 'meters')"),
    ("count: 5}", "count: 5}\nfaults: [{at_s: 900, duration_s: 5, kind: drop, target: pv}]",
     "faults[0].at_s: after the run ends (duration_s 600) (got 900"),
    ("duration_s: 600", "duration_s: 600\npower_flow_interval_s: 90\ndevice_step_s: 60",
     "power_flow_interval_s: must be a multiple of device_step_s (60) (got 90"),
    ("duration_s: 600", "duration_s: 600\nprices: {periods: [{start_h: 22, end_h: 6, price_eur_per_mwh: 5}]}",
     "prices.periods[0].end_h: end_h (6) must exceed start_h (22)"),
    ("count: 5}", "count: 5}\n  - {name: pv, kind: battery, count: 1}",
     "fleet[1].name: fleet group names must be unique (got 'pv')"),
])
def test_model_checks_name_key_and_value(capsys, tmp_path, old, new, expected):
    path = write(tmp_path, TINY.replace(old, new))
    rc, _, err = gridtwin(capsys, "validate", path)
    assert_user_error(rc, err, path, expected)


def test_error_lines_are_bounded():
    from scenarios.load import MAX_MESSAGE_CHARS, ScenarioError

    e = ScenarioError("x: " + "y\n" * 10_000)
    assert len(str(e)) <= MAX_MESSAGE_CHARS and "\n" not in str(e)


@pytest.mark.parametrize("duration, fleet, expected", [
    (5100, "  - {name: pv, kind: pv, count: 1}", "15 buses, 1 device in 1 group, 1:25 h"),
    (600, "  - {name: pv, kind: pv, count: 1500}\n  - {name: b, kind: battery, count: 2}",
     "2 groups, 0:10 h"),
    (172800, "", "0 devices in 0 groups, 48:00 h"),
    (30, "", "30 s"),
])
def test_validate_summary_line(capsys, tmp_path, duration, fleet, expected):
    text = TINY.replace("duration_s: 600", f"duration_s: {duration}")
    text = text.replace("fleet:\n  - {name: pv, kind: pv, count: 5}\n", f"fleet:\n{fleet}\n" if fleet else "")
    path = write(tmp_path, text, "ok.yaml")
    rc, out, err = gridtwin(capsys, "validate", path)
    assert rc == 0, err
    assert out.startswith(f"{path}: ok (tiny: cigre_mv, ") and expected in out, out
    if "1500" in fleet:
        assert "1,502 devices" in out
