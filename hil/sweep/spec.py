"""The sweep file: a pydantic model, its loader (one-line errors like scenarios), key-path edits
of a scenario, the design's expansion into samples and the KPI check done before anything runs.

A sample is one whole scenario: the base scenario with the fixed `overrides`, one value per
parameter and a seed derived from the sweep's seed written into it, validated again as a
scenario. Its key for `--resume` is a hash of that resolved scenario.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from scenarios.load import ScenarioError, format_validation_error
from scenarios.model import Distribution, Scenario

Scalar = bool | int | float | str


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Strict):
    """start..stop inclusive in steps of `step` (a float step lands on stop within 1e-9)."""

    start: float
    stop: float
    step: float = Field(gt=0)

    @model_validator(mode="after")
    def _ordered(self):
        if self.stop < self.start:
            raise ValueError(f"stop ({self.stop:g}) must be >= start ({self.start:g})")
        if (self.stop - self.start) / self.step > 100_000:
            raise ValueError("range has more than 100000 steps")
        return self

    def values(self) -> list[float]:
        n = int(math.floor((self.stop - self.start) / self.step + 1e-9))
        return [round(self.start + i * self.step, 12) for i in range(n + 1)]


class Parameter(Strict):
    """One swept input: a key path into the scenario and its values (list, range or distribution)."""

    key: str = Field(description="key path into the scenario, e.g. fleet[rooftop_pv].count, "
                                 "weather.cloudiness, dr_events[0].reduction_kw")
    name: str | None = Field(None, description="column name in results (default: the key path)")
    values: list[Scalar] | None = Field(None, min_length=1)
    range: Range | None = None
    dist: Distribution | None = Field(None, description="random design only")
    scale: float = Field(1.0, description="value written into the scenario = value x scale "
                                          "(rounded where the scenario key is an integer)")

    @model_validator(mode="after")
    def _one_source(self):
        given = [k for k in ("values", "range", "dist") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of values, range, dist (got {given or 'none'})")
        return self

    @property
    def column(self) -> str:
        return self.name or self.key

    def grid_values(self) -> list:
        return list(self.values) if self.values is not None else self.range.values()


class KpiLimit(Strict):
    min: float | None = None
    max: float | None = None


class SweepSpec(Strict):
    """A study: a base scenario, what varies, how samples are drawn and what is collected."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    description: str = ""
    scenario: str = Field(description="base scenario file, relative to the sweep file")
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="key path -> value applied to every sample")
    design: Literal["grid", "random", "zip"] = "grid"
    samples: int | None = Field(None, ge=1, le=1_000_000, description="random design: how many")
    seed: int = Field(0, description="every sample's scenario seed derives from it")
    seeds: int = Field(1, ge=1, le=10_000, description="replicates (scenario seeds) per parameter point")
    parameters: list[Parameter] = Field(default_factory=list)
    kpis: list[str] = Field(min_length=1, description="dotted summary.json keys to collect")
    limits: dict[str, KpiLimit] = Field(default_factory=dict,
                                        description="threshold lines per KPI (voltage and loading "
                                                    "limits default to the scenario's feeder limits)")
    keep_runs: Literal["none", "failed", "all"] = "none"

    @model_validator(mode="after")
    def _design(self):
        if self.design == "random":
            if self.samples is None:
                raise ValueError("design 'random' needs 'samples'")
        else:
            if self.samples is not None:
                raise ValueError(f"'samples' is for design 'random', not {self.design!r}")
            for i, p in enumerate(self.parameters):
                if p.dist is not None:
                    raise ValueError(f"parameters[{i}].dist: distributions need design 'random'")
        if self.design == "zip":
            lens = {len(p.grid_values()) for p in self.parameters}
            if len(lens) > 1:
                raise ValueError(f"design 'zip' needs equally long value lists (got {sorted(lens)})")
        cols = [p.column for p in self.parameters]
        dup = {c for c in cols if cols.count(c) > 1}
        if dup:
            raise ValueError(f"parameter names must be unique, repeated: {sorted(dup)}")
        return self


# --- key paths -----------------------------------------------------------------------------

_PART = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)|\[([^\]]+)\]")


class KeyPathError(ValueError):
    pass


def parse_key_path(path: str) -> list:
    """`fleet[rooftop_pv].params.p_peak_kw` -> ['fleet', 'rooftop_pv', 'params', 'p_peak_kw'];
    a bracketed integer is a list index, another bracketed word selects by `name`/`id`."""
    parts, pos = [], 0
    while pos < len(path):
        if path[pos] == "." and parts:
            pos += 1
        m = _PART.match(path, pos)
        if not m:
            raise KeyPathError(f"cannot parse key path {path!r} at character {pos + 1}")
        if m.group(1):
            parts.append(m.group(1))
        else:
            sel = m.group(2).strip()
            parts.append(int(sel) if re.fullmatch(r"-?\d+", sel) else ("name", sel))
        pos = m.end()
    if not parts:
        raise KeyPathError("empty key path")
    return parts


_FREE_DICTS = {"params"}  # mappings whose keys are not fixed by the schema


def set_key_path(data: dict, path: str, value) -> Any:
    """Write `value` at `path` in the scenario mapping `data` (in place); return the old value.
    Every step must exist, except a new key in a free mapping such as a group's `params`."""
    parts = parse_key_path(path)
    cur, where = data, ""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if isinstance(part, tuple):  # [name]: list element whose name/id matches
            if not isinstance(cur, list):
                raise KeyPathError(f"{where or '<top>'} is not a list, cannot select [{part[1]}]")
            hits = [j for j, el in enumerate(cur) if isinstance(el, dict)
                    and part[1] in (str(el.get("name")), str(el.get("id")))]
            if not hits:
                names = [el.get("name", el.get("id")) for el in cur if isinstance(el, dict)]
                raise KeyPathError(f"{where}: no element named {part[1]!r} (have: {names})")
            key = hits[0]
            where += f"[{part[1]}]"
        elif isinstance(part, int):
            if not isinstance(cur, list):
                raise KeyPathError(f"{where or '<top>'} is not a list, cannot index [{part}]")
            if not -len(cur) <= part < len(cur):
                raise KeyPathError(f"{where}[{part}]: index out of range ({len(cur)} elements)")
            key = part
            where += f"[{part}]"
        else:
            if not isinstance(cur, dict):
                raise KeyPathError(f"{where} is not a mapping, cannot take .{part}")
            free = where.rsplit(".", 1)[-1] in _FREE_DICTS
            if part not in cur and not (last and free):
                raise KeyPathError(f"{where + '.' if where else ''}{part}: no such key "
                                   f"(have: {sorted(cur)})")
            key = part
            where += ("." if where else "") + part
        if last:
            old = cur[key] if not isinstance(cur, dict) or key in cur else None
            cur[key] = value
            return old
        cur = cur[key]
    return None


def _scaled(value, scale: float, old):
    if scale == 1.0 or isinstance(value, (bool, str)):
        return value
    v = value * scale
    return int(round(v)) if isinstance(old, int) and not isinstance(old, bool) else v


# --- samples -------------------------------------------------------------------------------


@dataclass
class Sample:
    sample_id: int
    point: int  # parameter point (samples of one point differ only by seed)
    replicate: int
    seed: int
    params: dict  # column -> value as given in the sweep file (before scale)
    scenario: dict  # resolved scenario, JSON-able
    key: str  # hash of the resolved scenario (resume key)


@dataclass
class Sweep:
    spec: SweepSpec
    path: Path
    base_path: Path
    base: dict  # base scenario after overrides, defaults filled, JSON-able
    samples: list[Sample]

    @property
    def source_dir(self) -> Path:
        return self.base_path.parent


def derive_seed(sweep_seed: int, replicate: int) -> int:
    """Scenario seed of replicate r: the same for every parameter point (common random numbers,
    so differences between points are the parameter's, not the dice's)."""
    return int(np.random.SeedSequence([abs(int(sweep_seed)), int(replicate)]).generate_state(1)[0])


def scenario_hash(scenario: dict) -> str:
    return hashlib.sha256(json.dumps(scenario, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _points(spec: SweepSpec) -> list[dict]:
    ps = spec.parameters
    if not ps:
        return [{}]
    if spec.design == "grid":
        combos = itertools.product(*[p.grid_values() for p in ps])
        return [dict(zip([p.column for p in ps], c)) for c in combos]
    if spec.design == "zip":
        return [dict(zip([p.column for p in ps], c)) for c in zip(*[p.grid_values() for p in ps])]
    rng = np.random.default_rng(np.random.SeedSequence([abs(int(spec.seed)), 0x5EED]))
    from twin.params import draw  # the scenario's own distributions, one code path

    cols = {}
    for p in ps:
        if p.dist is not None:
            cols[p.column] = [float(x) for x in draw(p.dist, spec.samples, rng)]
        else:
            vals = p.grid_values()
            cols[p.column] = [vals[i] for i in rng.integers(0, len(vals), spec.samples)]
    return [{c: cols[c][i] for c in cols} for i in range(spec.samples)]


# --- loading -------------------------------------------------------------------------------


class SweepError(ScenarioError):
    """A user mistake in a sweep file: one line, exit code 2 (a ScenarioError, so the CLI's
    one-line handler prints it)."""


def _read_yaml(path: Path, what: str) -> dict:
    """The sweep file's mapping, read with the scenario loader's own limits and messages."""
    from scenarios.load import MAX_FILE_BYTES, parse_yaml, read_text_limited

    try:
        data = parse_yaml(path, read_text_limited(path, what, MAX_FILE_BYTES))
    except SweepError:
        raise
    except ScenarioError as e:
        raise SweepError(str(e)) from None
    if not isinstance(data, dict):
        raise SweepError(f"{path}: <top level>: expected a mapping of {what} keys")
    return data


def validate_spec(data: dict, path: str | Path = "<sweep>") -> SweepSpec:
    try:
        return SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SweepError(format_validation_error(path, e)) from None


def hil_refusal(s: Scenario) -> str | None:
    """Why a scenario cannot run in a sweep (it needs emulators, protocols or hardware), or None."""
    for g in s.fleet:
        if g.endpoint != "emulated":
            return f"fleet[{g.name}].endpoint is a real device"
        if g.link != "direct":
            return f"fleet[{g.name}].link is {g.link!r}"
    if s.hil.actions:
        return "hil.actions are set"
    if s.faults:
        return "faults act on emulated devices only"
    return None


def load_sweep(path_or_data, base_dir: str | Path | None = None) -> Sweep:
    """Validate a sweep file (or mapping) and expand it into resolved, validated samples."""
    if isinstance(path_or_data, (str, Path)):
        path = Path(path_or_data)
        data = _read_yaml(path, "sweep file")
        base_dir = path.resolve().parent
    else:
        path = Path("<sweep>")
        data = copy.deepcopy(dict(path_or_data))
        base_dir = Path(base_dir or Path.cwd()).resolve()
    spec = validate_spec(data, path)
    base_path = Path(spec.scenario)
    base_path = (base_path if base_path.is_absolute() else base_dir / base_path).resolve()
    if not base_path.exists():
        raise SweepError(f"{path}: scenario: file not found: {spec.scenario}")
    from scenarios.load import load_scenario

    base_sc = load_scenario(base_path)
    why = hil_refusal(base_sc)
    if why:
        raise SweepError(f"{path}: scenario: {spec.scenario} cannot run in a sweep ({why}); "
                         f"sweeps run scenarios in-process, use `gridtwin hil scenario` for it")
    base = base_sc.model_dump(mode="json")
    for key, value in spec.overrides.items():
        _apply(base, key, value, 1.0, path, f"overrides.{key}")
    base = _validated(base, path, "overrides", base_path).model_dump(mode="json")
    for i, p in enumerate(spec.parameters):  # key paths checked once, on the base
        probe = copy.deepcopy(base)
        try:
            set_key_path(probe, p.key, None)
        except KeyPathError as e:
            raise SweepError(f"{path}: parameters[{i}].key: {e} (got {p.key!r})") from None
    samples = []
    for point, params in enumerate(_points(spec)):
        for rep in range(spec.seeds):
            sc = copy.deepcopy(base)
            for p in spec.parameters:
                _apply(sc, p.key, params[p.column], p.scale, path, f"parameters[{p.column}]")
            seed = derive_seed(spec.seed, rep)
            sc["seed"] = seed
            where = f"sample {len(samples)} ({_fmt(params)})"
            resolved = _validated(sc, path, where, base_path)
            why = hil_refusal(resolved)
            if why:
                raise SweepError(f"{path}: {where}: cannot run in a sweep ({why})")
            sc = resolved.model_dump(mode="json")
            samples.append(Sample(len(samples), point, rep, seed, dict(params), sc, scenario_hash(sc)))
    sweep = Sweep(spec, path, base_path, base, samples)
    check_kpis(sweep)
    return sweep


def _fmt(params: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "base"


def _apply(sc: dict, key: str, value, scale: float, path, where: str) -> None:
    try:
        probe = copy.deepcopy(sc)
        old = set_key_path(probe, key, None)
        set_key_path(sc, key, _scaled(value, scale, old))
    except KeyPathError as e:
        raise SweepError(f"{path}: {where}: {e} (got {key!r})") from None


def _validated(sc: dict, path, where: str, base_path: Path) -> Scenario:
    try:
        s = Scenario.model_validate(sc)
    except ValidationError as e:
        msg = format_validation_error(base_path.name, e)
        raise SweepError(f"{path}: {where}: scenario becomes invalid: {msg}") from None
    s._source_dir = base_path.parent
    return s


def scenario_of(sample: Sample, source_dir: Path) -> Scenario:
    s = Scenario.model_validate(sample.scenario)
    s._source_dir = Path(source_dir)
    return s


# --- KPIs ----------------------------------------------------------------------------------


TEXT_KEYS = {"scenario", "start"}  # summary leaves that are not numbers
EXTRA_KPIS = {"assertions_failed"}  # the sweep's own: how many scenario assertions failed


def check_kpis(sweep: Sweep) -> None:
    """Every requested KPI must be a number the summary of a run will hold (the scenario
    loader's own key set, twin.kpi_keys); an unknown key stops the sweep before any sample runs."""
    from twin.kpi_keys import known_kpis, kpi_problem

    if not sweep.samples:
        raise SweepError(f"{sweep.path}: parameters: the design gives no samples")
    first = scenario_of(sweep.samples[0], sweep.source_dir)
    from twin.preflight import check_scenario  # what a run would reject, on the first sample

    try:
        check_scenario(first, str(sweep.base_path))
    except ScenarioError as e:
        raise SweepError(f"{sweep.path}: sample 0 ({_fmt(sweep.samples[0].params)}): {e}") from None
    keys = known_kpis(first)
    for i, k in enumerate(sweep.spec.kpis):
        if k in EXTRA_KPIS:
            continue
        if k in TEXT_KEYS:
            raise SweepError(f"{sweep.path}: kpis[{i}]: {k!r} is text, not a number")
        why = kpi_problem(k, first, keys)
        if why:
            raise SweepError(f"{sweep.path}: kpis[{i}]: {why}")


def kpi_value(summary: dict, key: str):
    if key == "assertions_failed":
        return sum(1 for a in summary.get("assertions", []) if not a.get("passed"))
    cur = summary
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    if isinstance(cur, bool):
        return float(cur)
    return float(cur) if isinstance(cur, (int, float)) else None


def default_limits(sweep: Sweep) -> dict[str, KpiLimit]:
    """Threshold lines: the scenario's own feeder limits for voltage/loading KPIs, the sweep's
    `limits` over them."""
    lim = sweep.base["feeder"]["limits"]
    out = {"voltage.max_pu": KpiLimit(max=lim["v_max_pu"]), "voltage.min_pu": KpiLimit(min=lim["v_min_pu"]),
           "loading.line_max_pct": KpiLimit(max=lim["line_loading_max_pct"]),
           "loading.trafo_max_pct": KpiLimit(max=lim["trafo_loading_max_pct"])}
    out.update(sweep.spec.limits)
    return {k: v for k, v in out.items() if k in sweep.spec.kpis}


def resolved_document(sweep: Sweep) -> dict:
    """What `sweep.resolved.yaml` holds: the validated sweep file with defaults, the base
    scenario after overrides, and every sample's parameters, seed and resume key."""
    return {"sweep": sweep.spec.model_dump(mode="json", exclude_none=True),
            "source": str(sweep.path), "base_scenario_file": str(sweep.base_path),
            "base_scenario": sweep.base,
            "samples": [{"sample_id": s.sample_id, "point": s.point, "replicate": s.replicate,
                         "seed": s.seed, "key": s.key, "params": s.params} for s in sweep.samples]}


def export_schema(out: str | Path) -> None:
    """The sweep file's JSON Schema (beside scenarios/schema.json), for editor completion."""
    Path(out).write_text(json.dumps(SweepSpec.model_json_schema(), indent=1) + "\n")
