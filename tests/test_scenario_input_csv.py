"""Issue 16, class 2: CSV inputs are checked for content (columns, times, values, coverage),
in `validate` and in `run`, with one line naming the file, the line and the column."""

import numpy as np
import pandas as pd
import pytest
from scenario_input import TINY, gridtwin, rejected_everywhere, write

START = pd.Timestamp("2026-06-21T10:00:00Z")


def weather_csv(rows: int = 13, step_min: int = 1, ghi=500.0, t_out=20.0, start=START) -> str:
    t = [start + pd.Timedelta(minutes=step_min * i) for i in range(rows)]
    lines = ["time,ghi_w_m2,t_out_c"] + [f"{x:%Y-%m-%dT%H:%M:%SZ},{ghi},{t_out}" for x in t]
    return "\n".join(lines) + "\n"


def with_input(section: str) -> str:
    return TINY + section + "\n"


WEATHER = "weather: {kind: csv, path: w.csv}"
PRICES = "prices: {kind: csv, path: p.csv}"
BASE = "base_load: {profile: csv, path: b.csv}"


@pytest.mark.parametrize("csv, expected", [
    ("time,ghi,t_out_c\n2026-06-21T10:00:00Z,1,2\n", ["missing column ghi_w_m2", "time,ghi_w_m2,t_out_c"]),
    ("time,ghi_w_m2,t_out_c\n", ["no data rows"]),
    ("", ["empty file"]),
    (weather_csv().replace("2026-06-21T10:03:00Z", "yesterday noon"),
     ["line 5, column time", "'yesterday noon'", "ISO 8601"]),
    (weather_csv().replace("10:04:00Z,500.0", "10:04:00Z,n/a"), ["line 6, column ghi_w_m2", "'n/a'"]),
    (weather_csv().replace("10:04:00Z,500.0", "10:04:00Z,"), ["line 6, column ghi_w_m2", "is empty"]),
    (weather_csv().replace("10:02:00Z,500.0", "10:02:00Z,inf"), ["line 4, column ghi_w_m2", "not a finite"]),
    (weather_csv(ghi=-400.0), ["line 2, column ghi_w_m2", "-400 is outside [0, 1500]", "13 bad rows"]),
    (weather_csv(t_out=95.0), ["column t_out_c", "95 is outside"]),
    (weather_csv().replace("2026-06-21T10:05:00Z", "2026-06-21T10:01:00Z"),
     ["line 7, column time", "times must increase"]),
    (weather_csv(rows=6), ["covers 2026-06-21 10:00 .. 2026-06-21 10:05 UTC", "run needs", "10:10",
                           "extend: hold"]),
    (weather_csv(start=START + pd.Timedelta(minutes=5)), ["covers 2026-06-21 10:05", "run needs 2026-06-21 10:00"]),
    ("time,ghi_w_m2,t_out_c\n2026-06-21T10:00:00Z,1,2,3,4\n", ["not a readable CSV"]),
])
def test_bad_weather_csv(capsys, tmp_path, csv, expected):
    (tmp_path / "w.csv").write_text(csv)
    line = rejected_everywhere(capsys, tmp_path, with_input(WEATHER), "weather.path", "w.csv", *expected)
    assert "Traceback" not in line


def test_binary_csv(capsys, tmp_path):
    (tmp_path / "w.csv").write_bytes(b"time,ghi_w_m2\n\xff\xfe\x00\x01" * 10)
    rejected_everywhere(capsys, tmp_path, with_input(WEATHER), "weather.path", "w.csv", "not a text file")


def test_bad_price_and_base_load_csv_listed_together(capsys, tmp_path):
    (tmp_path / "p.csv").write_text("time,price_eur_per_mwh\n2026-06-21T10:00:00Z,nan\n2026-06-21T11:00:00Z,5\n")
    (tmp_path / "b.csv").write_text("time,scale\n2026-06-21T10:00:00Z,1\n")
    rejected_everywhere(capsys, tmp_path, with_input(PRICES + "\n" + BASE),
                        "prices.path", "p.csv: line 2, column price_eur_per_mwh", "'nan'",
                        "base_load.path", "b.csv: covers")


@pytest.mark.parametrize("extend", ["hold", "cycle"])
def test_short_csv_accepted_with_explicit_extend(capsys, tmp_path, extend):
    (tmp_path / "w.csv").write_text(weather_csv(rows=6))
    path = write(tmp_path, with_input(f"weather: {{kind: csv, path: w.csv, extend: {extend}}}"), "ok.yaml")
    rc, out, err = gridtwin(capsys, "validate", path)
    assert rc == 0, err
    assert "ok" in out


def test_extend_semantics():
    """hold keeps the last value; cycle repeats the file (closing the loop one step later)."""
    import tempfile
    from pathlib import Path

    from twin.csv_inputs import WEATHER_COLUMNS, read_series

    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "w.csv"
        p.write_text("time,ghi_w_m2,t_out_c\n2026-06-21T10:00:00Z,0,10\n2026-06-21T10:01:00Z,600,20\n"
                     "2026-06-21T10:02:00Z,300,30\n")
        hold = read_series(p, WEATHER_COLUMNS, START, 600, "hold")
        cyc = read_series(p, WEATHER_COLUMNS, START, 600, "cycle")
    t = np.array([0.0, 60.0, 150.0, 180.0, 240.0, 210.0])
    assert list(hold.sample("ghi_w_m2", t)) == [0, 600, 300, 300, 300, 300]
    # period 180 s: 180 -> 0, 240 -> 60, 150 -> halfway from 300 back to 0
    assert list(cyc.sample("ghi_w_m2", t)) == [0, 600, 150, 0, 600, 300]


def test_times_with_offsets_are_utc(capsys, tmp_path):
    """'+02:00' rows are converted to UTC, so a file in local time with offsets covers the window."""
    t = [START + pd.Timedelta(minutes=i) for i in range(13)]
    rows = [f"{x.tz_convert('Europe/Berlin').isoformat()},100,20" for x in t]
    (tmp_path / "w.csv").write_text("time,ghi_w_m2,t_out_c\n" + "\n".join(rows) + "\n")
    path = write(tmp_path, with_input(WEATHER), "ok.yaml")
    rc, _, err = gridtwin(capsys, "validate", path)
    assert rc == 0, err


def test_run_reads_csv_inputs_with_extend(capsys, tmp_path):
    """The run itself samples the checked CSVs: weather cycled (6-minute file), base load held."""
    import pyarrow.parquet as pq

    t = [START + pd.Timedelta(minutes=i) for i in range(6)]
    (tmp_path / "w.csv").write_text("time,ghi_w_m2,t_out_c\n" + "".join(
        f"{x.isoformat()},{300 + 10 * i},20\n" for i, x in enumerate(t)))
    (tmp_path / "b.csv").write_text("time,scale\n2026-06-21T09:00:00Z,0.5\n2026-06-21T10:03:00Z,0.8\n")
    text = (TINY + "weather: {kind: csv, path: w.csv, extend: cycle}\n"
            "base_load: {profile: csv, path: b.csv, extend: hold, noise_pct: 0}\noutputs: {report: false}\n")
    path = write(tmp_path, text, "ok.yaml")
    rc, _, err = gridtwin(capsys, "run", path, "--out", tmp_path / "runs", "--quiet")
    assert rc == 0, err
    (ts_file,) = (tmp_path / "runs").glob("*/timeseries.parquet")
    ts = pq.read_table(ts_file).to_pandas()
    assert list(ts["ghi_w_m2"][:10]) == [300, 310, 320, 330, 340, 350, 300, 310, 320, 330]
    base = ts["base_load_kw"].to_numpy()
    assert base[3] == pytest.approx(base[9]) and base[3] > base[0]  # held at 0.8 after 10:03
