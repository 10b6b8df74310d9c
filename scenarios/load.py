"""Read a scenario YAML file into a validated `Scenario`, with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from pydantic import ValidationError

from scenarios.model import Scenario


class ScenarioError(ValueError):
    """A user mistake in a scenario file; its message is one actionable line."""


_UNION_TAGS = {"uniform", "normal", "choice", "float", "int", "str", "bool", "RealEndpoint"}


def _key_path(loc: tuple) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in _UNION_TAGS or str(part).startswith(("function-", "literal[", "tagged-union")):
            continue  # pydantic's union-branch tags carry no meaning for the user
        else:
            out += ("." if out else "") + str(part)
    return out or "<top level>"


def format_validation_error(path: str | Path, err: ValidationError) -> str:
    """First error as `file: key.path: message (got value)`, plus how many more there are."""
    errors = err.errors()
    # A mapping tried against a scalar branch of a union is noise when another branch says more.
    meaningful = [e for e in errors if not (isinstance(e.get("input"), (dict, list))
                                            and e["type"].endswith(("_type", "_parsing", "literal_error", "enum")))]
    first = (meaningful or errors)[0]
    got = first.get("input")
    msg = first["msg"].removeprefix("Value error, ")
    got_s = "" if isinstance(got, dict) or got is None or "got " in msg else f" (got {got!r})"
    more = f" [+{len(errors) - 1} more]" if len(errors) > 1 else ""
    return f"{path}: {_key_path(first['loc'])}: {msg}{got_s}{more}"


def load_scenario(path: str | Path) -> Scenario:
    """Parse and validate `path`; raise ScenarioError with a one-line message on any mistake."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read scenario file: {e.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ScenarioError(f"{path}:{where}: not valid YAML: {getattr(e, 'problem', e)}") from None
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: <top level>: expected a mapping of scenario keys")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(format_validation_error(path, e)) from None
    scenario._source_dir = path.resolve().parent
    for ref, rel in _referenced_files(scenario):
        if not resolve_path(scenario, rel).exists():
            raise ScenarioError(f"{path}: {ref}: file not found: {rel}")
    return scenario


def _referenced_files(s: Scenario):
    if s.feeder.path:
        yield "feeder.path", s.feeder.path
    if s.weather.kind == "csv":
        yield "weather.path", s.weather.path
    if s.base_load.profile == "csv":
        if not s.base_load.path:
            raise ScenarioError("base_load.path: profile 'csv' needs 'path'")
        yield "base_load.path", s.base_load.path
    if s.prices.kind == "csv":
        if not s.prices.path:
            raise ScenarioError("prices.path: kind 'csv' needs 'path'")
        yield "prices.path", s.prices.path


def resolve_path(scenario: Scenario, rel: str) -> Path:
    """A path named in a scenario, taken relative to the scenario file's folder."""
    p = Path(rel)
    base = getattr(scenario, "_source_dir", None) or Path.cwd()
    return p if p.is_absolute() else base / p


def export_schema(out: str | Path) -> None:
    """Write the JSON Schema editors use to complete scenario keys."""
    Path(out).write_text(json.dumps(Scenario.model_json_schema(), indent=1) + "\n")
