"""Helpers for the hostile-scenario tests (tests/test_scenario_input_*.py): write a file, run
`gridtwin validate|run` on it (in-process main() or a real subprocess) and assert the
user-error contract: exit code 2, one line on stderr naming the file, no traceback, no
results folder."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

TINY = """\
name: tiny
start: 2026-06-21T10:00:00Z
duration_s: 600
feeder: {kind: cigre_mv}
fleet:
  - {name: pv, kind: pv, count: 5}
"""


def write(tmp_path: Path, text: str, name: str = "bad.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def gridtwin(capsys, *args: str) -> tuple[int, str, str]:
    """Run the real CLI entry point in this process; (exit code, stdout, stderr)."""
    from gridtwin_cli import main

    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def gridtwin_subprocess(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "gridtwin_cli.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT, timeout=timeout, check=False)


def assert_user_error(rc: int, err: str, path: Path, *expected: str, max_len: int = 1600) -> str:
    """Exit 2, exactly one stderr line, naming `path`, containing each expected fragment."""
    assert rc == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    line = lines[0]
    assert str(path) in line, line
    assert len(line) <= max_len, len(line)
    for frag in expected:
        assert frag in line, f"{frag!r} not in {line!r}"
    return line


def rejected_everywhere(capsys, tmp_path: Path, text: str, *expected: str, name: str = "bad.yaml") -> str:
    """validate and run both refuse the file with the same kind of line; run leaves no folder."""
    path = write(tmp_path, text, name)
    rc, _, err = gridtwin(capsys, "validate", path)
    line = assert_user_error(rc, err, path, *expected)
    runs = tmp_path / "runs"
    rc, _, err = gridtwin(capsys, "run", path, "--out", runs, "--quiet")
    assert_user_error(rc, err, path, *expected)
    assert not runs.exists() or not any(runs.iterdir()), list(runs.iterdir())
    return line
