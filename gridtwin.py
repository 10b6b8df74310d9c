"""gridtwin from Python: load a scenario, run it, sweep it.

    import gridtwin
    sc = gridtwin.load_scenario("scenarios/pv_overvoltage.yaml")
    r = gridtwin.run(sc)                      # r.summary, r.timeseries, r.events, r.path
    df = gridtwin.sweep("scenarios/sweeps/pv_hosting_capacity.yaml", workers=2)

The same code paths as `gridtwin run` and `gridtwin sweep`; user mistakes raise
`scenarios.load.ScenarioError` (a ValueError) with the same one-line message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

__all__ = ["Result", "__version__", "load_scenario", "run", "sweep"]


from gridtwin_cli import _version

__version__ = _version()


@dataclass
class Result:
    """One finished run: its KPIs, its timeseries, its event log and where its files are."""

    summary: dict
    timeseries: pd.DataFrame
    events: list[dict]
    path: Path


def load_scenario(path_or_dict):
    """A validated `Scenario` from a YAML file or a mapping (relative files in a mapping are
    taken from the current folder)."""
    from scenarios.load import ScenarioError, format_validation_error
    from scenarios.load import load_scenario as _load
    from scenarios.model import Scenario

    if isinstance(path_or_dict, (str, Path)):
        return _load(path_or_dict)
    if isinstance(path_or_dict, Scenario):
        return path_or_dict
    if not isinstance(path_or_dict, dict):
        raise ScenarioError(f"<scenario>: expected a file path or a mapping (got {type(path_or_dict).__name__})")
    from pydantic import ValidationError

    try:
        s = Scenario.model_validate(path_or_dict)
    except ValidationError as e:
        raise ScenarioError(format_validation_error("<scenario>", e)) from None
    s._source_dir = Path.cwd()
    return s


def run(scenario, out: str | Path | None = None, quiet: bool = True) -> Result:
    """Run a scenario (object, file or mapping) like `gridtwin run`; results go to `out`
    (default: runs/), one folder per run."""
    from hil.runner import run_scenario

    sc = load_scenario(scenario)
    summary, path = run_scenario(sc, out_root=out or "runs", quiet=quiet)
    ts = pd.read_parquet(path / "timeseries.parquet")
    ev_file = path / "events.jsonl"
    events = [json.loads(x) for x in ev_file.read_text().splitlines() if x.strip()] if ev_file.exists() else []
    return Result(summary, ts, events, Path(path).resolve())


def sweep(spec, workers: int | None = None, scheduler: str | None = None, out: str | Path = "sweeps",
          resume: str | Path | None = None, quiet: bool = True) -> pd.DataFrame:
    """Run a sweep file (path or mapping) like `gridtwin sweep`; the results table, one row per
    sample (`df.attrs["path"]` is the sweep folder)."""
    from hil.sweep.engine import run_sweep
    from hil.sweep.spec import load_sweep

    sw = load_sweep(spec)
    df, path = run_sweep(sw, root=out, workers=workers, scheduler=scheduler, resume=resume,
                         quiet=quiet, log=(lambda *a: None) if quiet else print)
    df.attrs["path"] = str(Path(path).resolve())
    return df
