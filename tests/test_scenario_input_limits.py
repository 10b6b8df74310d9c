"""Issue 16, class 4: hostile files cannot exhaust the machine: file size, YAML alias
expansion, nesting depth, error-message length and device-step count are bounded."""

import pytest
from scenario_input import TINY, assert_user_error, gridtwin, rejected_everywhere, write


def bomb(levels: int, field: str = "name") -> str:
    """Anchors inside the description list, the last level in `field` (a string field)."""
    lines = ['description:', '  - &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, levels):
        refs = ",".join([f"*a{i - 1}"] * 9)
        lines.append(f"  - &a{i} [{refs}]")
    return "\n".join(lines) + f"\n{field}: *a{levels - 1}\n"


def test_billion_laughs_refused_before_expansion(capsys, tmp_path):
    """9 levels (10^9 strings if expanded) inside a string field: refused at once, short line."""
    line = rejected_everywhere(capsys, tmp_path, bomb(9) + TINY.replace("name: tiny\n", ""),
                               "expands to more than 200,000 nodes")
    assert len(line) < 300


def test_five_level_bomb_gives_a_short_line(capsys, tmp_path):
    """59,049 strings in a field that wants a string: the message shows a bounded repr."""
    text = bomb(5) + TINY.replace("name: tiny\n", "")
    line = rejected_everywhere(capsys, tmp_path, text, "name", "valid string")
    assert len(line) < 500


def test_deep_nesting(capsys, tmp_path):
    text = TINY + "description: " + "[" * 5000 + "]" * 5000 + "\n"
    rejected_everywhere(capsys, tmp_path, text, "nested")


def test_file_size_limit(capsys, tmp_path):
    text = TINY + "description: '" + "x" * (1 << 20) + "'\n"
    rejected_everywhere(capsys, tmp_path, text, "more than the 1,048,576 allowed")


def test_long_value_is_clipped_in_the_message(capsys, tmp_path):
    text = TINY.replace("count: 5", "count: '" + "9x" * 50_000 + "'")
    line = rejected_everywhere(capsys, tmp_path, text, "fleet[0].count", "valid integer")
    assert len(line) < 400


@pytest.mark.parametrize("old, new, key", [
    ("duration_s: 600", "duration_s: 600\ndevice_step_s: 1.0e-6\npower_flow_interval_s: 1.0e-6", "device_step_s"),
    ("duration_s: 600", "duration_s: 600\ncontroller: {enabled: true, cycle_s: 1.0e-6}", "controller.cycle_s"),
])
def test_step_count_bounded_unless_allow_long(capsys, tmp_path, old, new, key):
    text = TINY.replace(old, new)
    rejected_everywhere(capsys, tmp_path, text, key, "more than 1e+08", "--allow-long")
    path = write(tmp_path, text, "long.yaml")
    rc, _, err = gridtwin(capsys, "validate", "--allow-long", path)
    assert rc == 0, err


def test_many_files_each_reported(capsys, tmp_path):
    """validate over several files: one line per bad file, the good one still checked, exit 2."""
    good = write(tmp_path, TINY, "good.yaml")
    bad1 = write(tmp_path, TINY.replace("count: 5", "count: -1"), "bad1.yaml")
    bad2 = write(tmp_path, TINY + "seed: -3\n", "bad2.yaml")
    rc, out, err = gridtwin(capsys, "validate", good, bad1, bad2)
    assert rc == 2
    assert f"{good}: ok" in out
    lines = err.strip().splitlines()
    assert len(lines) == 2 and str(bad1) in lines[0] and str(bad2) in lines[1]
    assert "Traceback" not in err
    assert_user_error(2, lines[0] + "\n", bad1, "fleet[0].count")


@pytest.mark.parametrize("target", ["/dev/zero", "."])
def test_named_input_must_be_a_regular_file(capsys, tmp_path, target):
    """A feeder 'file' that is a device or a folder would hang or crash the reader."""
    text = TINY.replace("kind: cigre_mv}", f"kind: pandapower_json, path: '{target}'}}")
    rejected_everywhere(capsys, tmp_path, text, "feeder.path: not a regular file")


def test_results_root_checked_before_the_run(capsys, tmp_path):
    path = write(tmp_path, TINY, "ok.yaml")
    (tmp_path / "taken").write_text("a file, not a folder")
    rc, _, err = gridtwin(capsys, "run", path, "--out", tmp_path / "taken", "--quiet")
    assert rc == 2 and "--out" in err and "cannot create the results folder" in err
    assert len(err.strip().splitlines()) == 1


def test_integer_with_too_many_digits(capsys, tmp_path):
    rejected_everywhere(capsys, tmp_path, TINY.replace("count: 5", "count: 1" + "0" * 5000),
                        "not a usable YAML value", "digits")


def test_too_many_fleet_groups(capsys, tmp_path):
    groups = "".join(f"  - {{name: g{i}, kind: pv, count: 1}}\n" for i in range(1001))
    text = TINY.replace("  - {name: pv, kind: pv, count: 5}\n", groups)
    rejected_everywhere(capsys, tmp_path, text, "fleet: List should have at most 1000 items")
