"""Issue 16, class 5: what used to be accepted silently is an error: duplicate YAML keys, DR
events outside the run window, assertions on KPIs the run never writes, CLI overrides that
bypass the model."""

import pytest
from scenario_input import ROOT, TINY, assert_user_error, gridtwin, rejected_everywhere, write

DR = "dr_events:\n  - {id: ev1, start: %s, duration_s: 600, reduction_kw: 5}\ncontroller: {enabled: true}\n"


def test_duplicate_keys(capsys, tmp_path):
    text = TINY.replace("duration_s: 600", "duration_s: 600\nduration_s: 1000000")
    rejected_everywhere(capsys, tmp_path, text, "line 4", "duplicate key 'duration_s' (first on line 3)")


def test_duplicate_nested_keys(capsys, tmp_path):
    text = TINY.replace("kind: cigre_mv}", "kind: cigre_mv, kind: cigre_lv}")
    rejected_everywhere(capsys, tmp_path, text, "duplicate key 'kind'")


@pytest.mark.parametrize("start", ["2026-06-20T09:00:00Z", "2026-06-21T09:50:00Z", "2026-06-21T10:10:00Z",
                                   "2026-06-22T10:00:00Z"])
def test_dr_event_outside_run_window(capsys, tmp_path, start):
    rejected_everywhere(capsys, tmp_path, TINY + DR % start, "dr_events[0].start", "'ev1'",
                        "outside the run window 2026-06-21 10:00 .. 2026-06-21 10:10 UTC")


def test_dr_event_overlapping_window_is_fine(capsys, tmp_path):
    path = write(tmp_path, TINY + DR % "2026-06-21T09:55:00Z", "ok.yaml")
    rc, _, err = gridtwin(capsys, "validate", path)
    assert rc == 0, err


@pytest.mark.parametrize("kpi, expected", [
    ("voltage.max_p", ["assertions[0].kpi", "'voltage.max_p'", "did you mean voltage.max_pu",
                       "voltage.min_pu"]),
    ("groups.pv.curtailed", ["groups.pv.curtailed_kwh", "groups.pv.energy_kwh"]),
    ("groups.bat.energy_kwh", ["'groups.bat.energy_kwh'", "groups.pv."]),
    ("energy_kwh.battery", ["energy_kwh.pv", "energy_kwh.head_import"]),
    ("dr.ev1.delivery_pct", ["only when controller.enabled"]),
    ("tcl_tracking.model_rms_pct", ["not a KPI this scenario writes"]),
])
def test_assertion_on_unknown_kpi(capsys, tmp_path, kpi, expected):
    text = TINY + f"assertions:\n  - {{kpi: {kpi}, op: '<', value: 1}}\n"
    rejected_everywhere(capsys, tmp_path, text, *expected)


def test_assertion_on_open_section_accepted(capsys, tmp_path):
    text = (TINY + DR % "2026-06-21T10:02:00Z"
            + "assertions:\n  - {kpi: dr.ev1.delivery_pct, op: '>', value: 1}\n"
            + "  - {kpi: controller.cycles, op: '>', value: 1}\n")
    rc, _, err = gridtwin(capsys, "validate", write(tmp_path, text, "ok.yaml"))
    assert rc == 0, err
    text = text.replace("dr.ev1.", "dr.ev2.")
    path = write(tmp_path, text)
    rc, _, err = gridtwin(capsys, "validate", path)
    assert_user_error(rc, err, path, "'dr.ev2.delivery_pct'", "dr.ev1.*")


@pytest.mark.parametrize("value, expected", [
    ("-5", ["duration_s (set by --duration-s)", "greater than 0", "-5"]),
    ("0", ["duration_s (set by --duration-s)", "greater than 0"]),
    ("nan", ["duration_s (set by --duration-s)", "finite"]),
    ("1e12", ["duration_s (set by --duration-s)", "less than or equal to 31622400"]),
])
def test_duration_override_goes_through_the_model(capsys, tmp_path, value, expected):
    path = write(tmp_path, TINY)
    rc, _, err = gridtwin(capsys, "run", path, "--out", tmp_path / "runs", "--quiet", "--duration-s", value)
    assert_user_error(rc, err, path, *expected)
    assert not (tmp_path / "runs").exists()


def test_duration_override_cannot_cut_regulation_windows(capsys, tmp_path):
    path = ROOT / "scenarios" / "tcl_regulation.yaml"
    rc, _, err = gridtwin(capsys, "run", path, "--out", tmp_path / "runs", "--quiet", "--duration-s", "60")
    assert_user_error(rc, err, path, "duration_s (set by --duration-s)", "regulation windows", "after duration_s 60, the run's end")
    assert not (tmp_path / "runs").exists()


def test_duration_override_applies(tmp_path):
    from twin.cli import load_checked

    s, _ = load_checked(write(tmp_path, TINY), {"duration_s": 120.0}, {"duration_s": "--duration-s"})
    assert s.duration_s == 120.0


@pytest.mark.parametrize("args, expected", [
    (["hil", "scenario", "{p}", "--out", "{runs}", "--quiet", "--duration-s", "0"],
     ["duration_s (set by --duration-s)", "greater than 0"]),
    (["emulate", "{p}"], ["fleet[0].params.mode", "value 0 not allowed"]),
])
def test_other_commands_check_like_validate(capsys, tmp_path, args, expected):
    """`gridtwin hil scenario` and `gridtwin emulate` load scenarios through the same check."""
    path = write(tmp_path, TINY.replace("kind: pv, count: 5", "kind: tcl, count: 5, params: {mode: 0}")
                 if args[0] == "emulate" else TINY)
    argv = [a.format(p=path, runs=tmp_path / "runs") for a in args]
    rc, _, err = gridtwin(capsys, *argv)
    assert_user_error(rc, err, path, *expected)
    assert not (tmp_path / "runs").exists()


def test_yaml_merge_keys_work_and_explicit_duplicates_do_not(capsys, tmp_path):
    merged = TINY.replace("  - {name: pv, kind: pv, count: 5}",
                          "  - &pv {name: pv, kind: pv, count: 5}\n  - {<<: *pv, name: pv2, count: 3}")
    rc, out, err = gridtwin(capsys, "validate", write(tmp_path, merged, "ok.yaml"))
    assert rc == 0 and "8 devices in 2 groups" in out, err
    rejected_everywhere(capsys, tmp_path, merged.replace("name: pv2,", "name: pv2, name: pv3,"),
                        "duplicate key 'name'")


@pytest.mark.parametrize("old, new, expected", [
    ("kind: cigre_mv}", "kind: cigre_mv, code: 1-MV-rural--0-sw}", "feeder.code: is used only with kind 'simbench'"),
    ("kind: cigre_mv}", "kind: cigre_mv, path: net.json}", "feeder.path: is used only with kind 'pandapower_json'"),
    ("duration_s: 600", "duration_s: 600\nweather: {path: w.csv}", "weather.path: is used only with a CSV source"),
    ("duration_s: 600", "duration_s: 600\nprices: {extend: cycle}", "prices.extend: is used only with a CSV source"),
    ("name: tiny", "name: " + "n" * 101, "name: String should have at most 100 characters"),
    ("count: 5}", "count: 0}\ncontroller: {enabled: true}", "fleet[0].count: must be at least 1 while controller"),
])
def test_settings_that_would_be_ignored_or_crash(capsys, tmp_path, old, new, expected):
    rejected_everywhere(capsys, tmp_path, TINY.replace(old, new), expected)
