"""Issue 16, class 3: user mistakes that used to end in a traceback at run time (binary file,
seed -1, NaN/inf in numeric fields) are one-line errors before anything runs."""

import pytest
from scenario_input import TINY, rejected_everywhere


def test_binary_scenario_file(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    from scenario_input import assert_user_error, gridtwin

    for args in (["validate", path], ["run", path, "--out", tmp_path / "runs", "--quiet"]):
        rc, _, err = gridtwin(capsys, *args)
        assert_user_error(rc, err, path, "not a text file", "not UTF-8")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("old, new, expected", [
    ("duration_s: 600", "duration_s: 600\nseed: -1", ["seed", "greater than or equal to 0", "-1"]),
    ("duration_s: 600", "duration_s: 600\nseed: 99999999999999999999999", ["seed", "less than or equal to 4294967295"]),
    ("duration_s: 600", "duration_s: 600\nweather: {t_out_mean_c: .nan}", ["weather.t_out_mean_c", "finite", "nan"]),
    ("kind: cigre_mv}", "kind: cigre_mv, base_load_scale: .inf}", ["feeder.base_load_scale", "finite", "inf"]),
    ("duration_s: 600", "duration_s: 600\nweather: {latitude_deg: '-.inf'}", ["weather.latitude_deg", "finite"]),
    ("count: 5}", "count: 5, params: {p_peak_kw: .nan}}", ["fleet[0].params.p_peak_kw", "finite"]),
    ("count: 5}", "count: 5, params: {p_peak_kw: {dist: uniform, low: 1, high: .inf}}}",
     ["fleet[0].params.p_peak_kw.high", "finite"]),
    ("duration_s: 600", "duration_s: 600\nassertions: [{kpi: voltage.max_pu, op: '<', value: .nan}]",
     ["assertions[0].value", "finite"]),
    ("count: 5}", "count: 5, params: {p_peak_kw: {dist: choice, values: [1, 2], weights: [0, 0]}}}",
     ["fleet[0].params.p_peak_kw.weights", "not all 0"]),
    ("count: 5}", "count: 5, params: {p_peak_kw: {dist: normal, mean: 5, std: 1, min: 9, max: 2}}}",
     ["fleet[0].params.p_peak_kw.max", "must be >= min"]),
    ("count: 5}", "count: 5, params: {p_peak_kw: {dist: uniform, low: -1.0e+308, high: 1.0e+308}}}",
     ["fleet[0].params.p_peak_kw", "cannot draw values"]),
    ("start: 2026-06-21T10:00:00Z", "start: 9999-12-31T23:00:00Z", ["start", "year must be 1900..2200", "9999"]),
    ("start: 2026-06-21T10:00:00Z", "start: 0001-01-01T00:00:00+05:00", ["start", "year must be"]),
    ("duration_s: 600", ("duration_s: 600\ndr_events: [{id: e, start: 2026-06-21T10:05:00Z, duration_s: 1.0e+300, "
                         "reduction_kw: 5}]"), ["dr_events[0].duration_s", "less than or equal to 31622400"]),
    ("duration_s: 600", ("duration_s: 600\ndr_events: [{id: e, start: 2026-06-21T10:05:00, duration_s: 60, "
                         "reduction_kw: 5}]\ncontroller: {enabled: true}"), None),
])
def test_nonfinite_and_out_of_range_numbers(capsys, tmp_path, old, new, expected):
    text = TINY.replace(old, new)
    if expected is None:  # a naive DR start is UTC (it used to be compared with an aware one)
        from scenarios.load import load_scenario

        p = tmp_path / "ok.yaml"
        p.write_text(text)
        assert load_scenario(p).dr_events[0].start.utcoffset().total_seconds() == 0
        return
    rejected_everywhere(capsys, tmp_path, text, *expected)


def test_huge_choice_weights_are_fine(tmp_path):
    """Weights are scaled before they are summed (1e308 + 1e308 overflowed to inf)."""
    from twin.cli import load_checked

    text = TINY.replace("count: 5}", "count: 5, params: {p_peak_kw: {dist: choice, values: [1, 2], "
                                     "weights: [1.0e+308, 1.0e+308]}}}")
    p = tmp_path / "ok.yaml"
    p.write_text(text)
    _, checked = load_checked(p)
    assert checked.n_devices == 5
