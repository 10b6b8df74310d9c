"""Issue 16, class 1: `validate` finds everything `run` would (feeder, placement, fleet params).

Each file here used to pass `validate` and fail (or silently misbehave) in `run`."""

import pytest
from scenario_input import (
    TINY,
    assert_user_error,
    gridtwin,
    gridtwin_subprocess,
    rejected_everywhere,
    write,
)


def fleet(line: str) -> str:
    return TINY.replace("  - {name: pv, kind: pv, count: 5}", line)


@pytest.mark.parametrize("text, expected", [
    (TINY.replace("kind: cigre_mv}", "kind: simbench, code: 1-MV-nowhere--0-sw}"),
     ["feeder.code", "unknown SimBench code '1-MV-nowhere--0-sw'"]),
    (fleet("  - {name: pv, kind: pv, count: 5, placement: {rule: buses, buses: [3, 999]}}"),
     ["fleet[0].placement.buses", "unknown bus 999"]),
    (fleet("  - {name: pv, kind: pv, count: 5, placement: {rule: buses, buses: [-1]}}"),
     ["fleet[0].placement.buses[0]", "greater than or equal to 0", "-1"]),
    (fleet("  - {name: pv, kind: pv, count: 5, params: {p_peek_kw: 3}}"),
     ["fleet[0].params.p_peek_kw", "unknown params", "p_peak_kw"]),
    (fleet("  - {name: pv, kind: pv, count: 5, params: {efficiency: 7}}"),
     ["fleet[0].params.efficiency", "7", "outside"]),
    (fleet("  - {name: ac, kind: tcl, count: 5, params: {mode: 0}}"),
     ["fleet[0].params.mode", "value 0 not allowed"]),
    (fleet("  - {name: ev, kind: ev, count: 5, params: {arrival_h_mean: 30}}"),
     ["fleet[0].params.arrival_h_mean", "30", "outside [0, 24]"]),
    (fleet("  - {name: bat, kind: battery, count: 3, params: {soc_min_pct: 80, soc_max_pct: 20}}"),
     ["fleet[0].params.soc_min_pct", "80", "below soc_max_pct (20)"]),
    (fleet("  - {name: bat, kind: battery, count: 3, params: {soc_min_pct: {dist: uniform, low: 10, high: 60},"
           " soc_max_pct: {dist: uniform, low: 40, high: 90}}}"),
     ["fleet[0].params.soc_min_pct", "below soc_max_pct"]),
])
def test_validate_rejects_what_run_rejects(capsys, tmp_path, text, expected):
    rejected_everywhere(capsys, tmp_path, text, *expected)


@pytest.mark.parametrize("content", ['{"a": 1}', "[1, 2]", "not json at all", ""])
def test_pandapower_json_that_is_no_network(capsys, tmp_path, content):
    (tmp_path / "net.json").write_text(content)
    text = TINY.replace("kind: cigre_mv}", "kind: pandapower_json, path: net.json}")
    rejected_everywhere(capsys, tmp_path, text, "feeder.path", "net.json")


def test_pandapower_json_network_validates(capsys, tmp_path):
    import pandapower as pp
    import pandapower.networks as pn

    pp.to_json(pn.create_cigre_network_lv(), str(tmp_path / "lv.json"))
    path = write(tmp_path, TINY.replace("kind: cigre_mv}", "kind: pandapower_json, path: lv.json}"), "ok.yaml")
    rc, out, err = gridtwin(capsys, "validate", path)
    assert rc == 0, err
    assert "44 buses" in out


def test_several_fleet_problems_listed_together(capsys, tmp_path):
    text = fleet("  - {name: ev, kind: ev, count: 2, params: {arrival_h_mean: 30}}\n"
                 "  - {name: ac, kind: tcl, count: 2, params: {mode: 0}}")
    path = write(tmp_path, text)
    rc, _, err = gridtwin(capsys, "validate", path)
    assert_user_error(rc, err, path, "fleet[0].params.arrival_h_mean", "fleet[1].params.mode")


def test_subprocess_contract(tmp_path):
    """The installed console script: exit 2, one line, no traceback, nothing written."""
    path = write(tmp_path, fleet("  - {name: ac, kind: tcl, count: 5, params: {mode: 0}}"))
    r = gridtwin_subprocess("run", path, "--out", tmp_path / "runs", "--quiet")
    assert_user_error(r.returncode, r.stderr, path, "fleet[0].params.mode")
    assert not (tmp_path / "runs").exists()



def test_secure_channel_key_files_must_exist(capsys, tmp_path):
    (tmp_path / "gw.json").write_text("{}")
    text = fleet("  - {name: pv, kind: pv, count: 1, link: modbus, endpoint: {host: 127.0.0.2, port: 1502, "
                 "map: sunspec_pv, secure: {gateway: '127.0.0.2:7700', key_file: missing.pem, "
                 "gateway_pubkey_file: gw.json}}}")
    rejected_everywhere(capsys, tmp_path, text, "fleet[0].endpoint.secure.key_file: file not found: missing.pem")
