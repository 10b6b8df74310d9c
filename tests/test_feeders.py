"""Feeder builders: the on-disk cache of parsed SimBench nets."""

from __future__ import annotations

import pandas as pd
import pytest

from grid_models import feeders
from grid_models.feeders import FeederError, build_feeder

CODE = "1-LV-rural1--0-sw"


@pytest.fixture(scope="module")
def parsed(tmp_path_factory):
    """One SimBench parse into a fresh cache folder, shared by this file's tests."""
    folder = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GRIDTWIN_CACHE_DIR", str(folder))
        return folder, build_feeder("simbench", CODE)


def test_simbench_net_is_parsed_once_then_loaded_from_the_cache(parsed, monkeypatch):
    folder, first = parsed
    monkeypatch.setenv("GRIDTWIN_CACHE_DIR", str(folder))
    files = list(folder.glob("simbench-*.pkl"))
    assert len(files) == 1 and CODE in files[0].name
    assert not list(folder.glob("*.tmp"))  # written whole, then renamed

    calls = []
    import simbench

    monkeypatch.setattr(simbench, "get_simbench_net", lambda code: calls.append(code))
    second = build_feeder("simbench", CODE)
    assert calls == []  # from the file, SimBench's CSVs not read again
    for table in ("bus", "line", "trafo", "load", "sgen", "ext_grid"):
        pd.testing.assert_frame_equal(first[table], second[table])
    second.load.loc[second.load.index[0], "p_mw"] += 1.0  # each build is a fresh net
    assert build_feeder("simbench", CODE).load.p_mw.iloc[0] == first.load.p_mw.iloc[0]


def test_damaged_cache_file_is_rebuilt_not_trusted(parsed, monkeypatch):
    folder, net = parsed
    monkeypatch.setenv("GRIDTWIN_CACHE_DIR", str(folder))
    path = next(folder.glob("simbench-*.pkl"))
    path.write_bytes(b"not a pickle")
    again = build_feeder("simbench", CODE)
    pd.testing.assert_frame_equal(net.bus, again.bus)
    assert path.stat().st_size > 1000  # rewritten with the parsed net


def test_cache_can_be_turned_off_and_unknown_codes_still_fail_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("GRIDTWIN_CACHE_DIR", "")
    assert feeders.cache_dir() is None
    with pytest.raises(FeederError, match="feeder.code: unknown SimBench code 'no-such-code'"):
        build_feeder("simbench", "no-such-code")
