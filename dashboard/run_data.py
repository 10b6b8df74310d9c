"""Reading a finished run folder (timeseries.parquet, events.jsonl, summary.json)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


class RunFolderError(ValueError):
    """The folder is not a gridtwin run; one-line message."""


@dataclass
class RunData:
    path: Path
    timeseries: pd.DataFrame
    events: list[dict]
    summary: dict

    @property
    def name(self) -> str:
        return self.path.name

    def columns(self, prefix: str = "") -> list[str]:
        return [c for c in self.timeseries.columns if c.startswith(prefix) and c not in ("time", "t_s")]


def load_run(path: str | Path) -> RunData:
    p = Path(path)
    missing = [f for f in ("timeseries.parquet", "events.jsonl", "summary.json") if not (p / f).exists()]
    if missing:
        raise RunFolderError(f"{p}: not a gridtwin run folder (missing {', '.join(missing)})")
    ts = pd.read_parquet(p / "timeseries.parquet")
    events = [json.loads(line) for line in (p / "events.jsonl").read_text().splitlines() if line.strip()]
    return RunData(p, ts, events, json.loads((p / "summary.json").read_text()))


def flat_kpis(summary: dict, prefix: str = "") -> dict[str, object]:
    """summary.json flattened to dotted keys (the same paths scenario assertions use)."""
    out: dict[str, object] = {}
    for k, v in summary.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat_kpis(v, key + "."))
        elif not isinstance(v, list):
            out[key] = v
    return out
