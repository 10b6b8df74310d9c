"""Read a scenario YAML file into a validated `Scenario`, with one-line errors.

Hostile input stays cheap: the file size is capped, YAML aliases may not expand beyond a
bound (no "billion laughs"), duplicate keys are errors, and every message is one line of
bounded length naming the file, the key path and the value.
"""

from __future__ import annotations

import json
import reprlib
from pathlib import Path

import yaml
from pydantic import ValidationError

from scenarios.model import At, Scenario

MAX_FILE_BYTES = 1 << 20  # a scenario is a page of YAML; 1 MiB is generous
MAX_INPUT_BYTES = 256 << 20  # a file the scenario names (feeder JSON, CSV inputs)
MAX_YAML_NODES = 200_000  # nodes after alias expansion
MAX_YAML_DEPTH = 64
MAX_ERRORS_LISTED = 5
MAX_MESSAGE_CHARS = 1500
MAX_VALUE_CHARS = 60


class ScenarioError(ValueError):
    """A user mistake in a scenario file; its message is one actionable line of bounded length."""

    def __init__(self, msg: str):
        msg = " ".join(str(msg).split())  # one line, whatever a library put in it
        if len(msg) > MAX_MESSAGE_CHARS:
            msg = msg[:MAX_MESSAGE_CHARS - 1] + "…"
        super().__init__(msg)


_repr = reprlib.Repr()
_repr.maxstring = MAX_VALUE_CHARS
_repr.maxother = MAX_VALUE_CHARS
_repr.maxlist = _repr.maxtuple = _repr.maxdict = 4
_repr.maxlevel = 1


def show(value) -> str:
    """A bounded repr of a user value for an error message (never expands big structures)."""
    return _repr.repr(value)


def clip(text: str, n: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[:n - 1] + "…"


# --- YAML: safe, duplicate-free, alias-bounded --------------------------------------------------


class _Limited(yaml.SafeLoader):
    """SafeLoader that refuses duplicate mapping keys and alias expansions beyond a bound."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *defaults` merges; keys written here override merged ones
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise yaml.constructor.ConstructorError(
                    None, None, "mapping keys must be plain values", key_node.start_mark) from None
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {show(key)} (first on line {seen[key] + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node, memo: dict, depth: int = 0) -> int:
    """Nodes the document has once every alias is expanded (aliases share node objects)."""
    if depth > MAX_YAML_DEPTH:
        raise _TooBig(f"nested deeper than {MAX_YAML_DEPTH} levels")
    key = id(node)
    if key in memo:
        return memo[key]
    memo[key] = 1  # a recursive alias counts once; expansion checks below bound the rest
    if isinstance(node, yaml.SequenceNode):
        n = 1 + sum(_expanded_size(c, memo, depth + 1) for c in node.value)
    elif isinstance(node, yaml.MappingNode):
        n = 1 + sum(_expanded_size(k, memo, depth + 1) + _expanded_size(v, memo, depth + 1)
                    for k, v in node.value)
    else:
        n = 1
    if n > MAX_YAML_NODES:
        raise _TooBig(f"expands to more than {MAX_YAML_NODES:,} nodes (YAML aliases)")
    memo[key] = n
    return n


class _TooBig(Exception):
    pass


def parse_yaml(path: Path, text: str):
    """The YAML document in `text`, or ScenarioError naming line and column."""
    loader = _Limited(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {})
        return loader.construct_document(node)
    except _TooBig as e:
        raise ScenarioError(f"{path}: <top level>: document {e}; refusing to load it") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}:" if mark else ""
        raise ScenarioError(f"{path}:{where} not valid YAML: {clip(getattr(e, 'problem', None) or e)}") from None
    except RecursionError:
        raise ScenarioError(f"{path}: <top level>: document nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal with more digits than Python converts
        raise ScenarioError(f"{path}: not a usable YAML value: {clip(e, 160)}") from None
    finally:
        loader.dispose()


def read_text_limited(path: Path, what: str, limit: int) -> str:
    """A user file as text: size-capped, UTF-8, one-line errors."""
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise ScenarioError(f"{path}: cannot read {what}: not a regular file")
        if size > limit:
            raise ScenarioError(f"{path}: {what} is {size:,} bytes, more than the {limit:,} allowed")
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read {what}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise ScenarioError(f"{path}: {what} is more than the {limit:,} bytes allowed")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ScenarioError(f"{path}: not a text file: byte 0x{raw[e.start]:02x} at offset {e.start} "
                            f"is not UTF-8") from None


# --- validation messages -------------------------------------------------------------------------

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
    return out


def _join(base: str, sub: str) -> str:
    if not base:
        return sub
    if not sub:
        return base
    return base + sub if sub.startswith("[") else f"{base}.{sub}"


def _one(e: dict, overrides: dict | None) -> tuple[str, str]:
    """(key path, 'key.path: message (got value)') for one pydantic error."""
    err = (e.get("ctx") or {}).get("error")
    path = _key_path(e["loc"])
    if isinstance(err, At):  # a model-level check that knows which key is wrong
        path = _join(path, err.path)
    msg = clip(e["msg"].removeprefix("Value error, "))
    got = e.get("input")
    if isinstance(err, At):
        got = err.value
    got_s = ("" if isinstance(got, dict) or got is None or "got " in msg or isinstance(err, At) and not err.show
             else f" (got {show(got)})")
    top = path.split(".")[0].split("[")[0]
    src = f" (set by {overrides[top]})" if overrides and top in overrides else ""
    return path, f"{path or '<top level>'}{src}: {msg}{got_s}"


def format_validation_error(path: str | Path, err: ValidationError, overrides: dict | None = None) -> str:
    """`file: key.path: message (got value)`, several errors joined by '; ' up to a bound."""
    errors = err.errors()
    # A mapping tried against a scalar branch of a union is noise when another branch of the
    # same key says more.
    paths = [_key_path(e["loc"]) for e in errors]

    def noise(i, e):
        return (isinstance(e.get("input"), (dict, list))
                and e["type"].endswith(("_type", "_parsing", "literal_error", "enum"))
                and any(j != i and (p == paths[i] or p.startswith((paths[i] + ".", paths[i] + "[")))
                        for j, p in enumerate(paths)))

    meaningful = [e for i, e in enumerate(errors) if not noise(i, e)]
    lines, seen = [], set()
    for e in meaningful or errors:
        key, line = _one(e, overrides)
        if key in seen:
            continue  # one message per key: union branches repeat themselves
        seen.add(key)
        lines.append(line)
    shown = lines[:MAX_ERRORS_LISTED]
    more = f"; and {len(lines) - len(shown)} more" if len(lines) > len(shown) else ""
    return f"{path}: " + "; ".join(shown) + more


# --- the entry point -----------------------------------------------------------------------------


def _apply_overrides(data: dict, overrides: dict) -> None:
    for dotted, value in overrides.items():
        cur = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            nxt = cur.get(p)
            if not isinstance(nxt, dict):
                nxt = cur[p] = {}
            cur = nxt
        cur[leaf] = value


def load_scenario(path: str | Path, overrides: dict | None = None, allow_long: bool = False,
                  override_flags: dict | None = None) -> Scenario:
    """Parse and validate `path`; raise ScenarioError with a one-line message on any mistake.

    `overrides` ({"duration_s": 60}) replace keys before validation, so they are checked like
    the file's own values; `override_flags` ({"duration_s": "--duration-s"}) names their source
    in messages. `allow_long` lifts the bound on device steps."""
    path = Path(path)
    text = read_text_limited(path, "scenario file", MAX_FILE_BYTES)
    data = parse_yaml(path, text)
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: <top level>: expected a mapping of scenario keys, got {show(data)}")
    if overrides:
        _apply_overrides(data, overrides)
    try:
        scenario = Scenario.model_validate(data, context={"allow_long": allow_long})
    except ValidationError as e:
        raise ScenarioError(format_validation_error(path, e, override_flags)) from None
    except RecursionError:
        raise ScenarioError(f"{path}: <top level>: document nested too deeply") from None
    scenario._source_dir = path.resolve().parent
    scenario._source_file = path
    missing = []
    for ref, rel in _referenced_files(path, scenario):
        target = resolve_path(scenario, rel)
        if not target.exists():
            missing.append(f"{ref}: file not found: {clip(rel, 200)}")
        elif not target.is_file():  # a folder, a device (/dev/zero) or a pipe would hang or crash the reader
            missing.append(f"{ref}: not a regular file: {clip(rel, 200)}")
        elif target.stat().st_size > MAX_INPUT_BYTES:
            missing.append(f"{ref}: {clip(rel, 200)} is {target.stat().st_size:,} bytes, more than the "
                           f"{MAX_INPUT_BYTES:,} allowed")
    if missing:
        raise ScenarioError(f"{path}: " + "; ".join(missing[:MAX_ERRORS_LISTED]))
    return scenario


def _referenced_files(path, s: Scenario):
    if s.feeder.path:
        yield "feeder.path", s.feeder.path
    if s.weather.kind == "csv":
        yield "weather.path", s.weather.path
    if s.base_load.profile == "csv":
        yield "base_load.path", s.base_load.path
    if s.prices.kind == "csv":
        yield "prices.path", s.prices.path
    for i, g in enumerate(s.fleet):
        sec = getattr(g.endpoint, "secure", None)
        for key in ("key_file", "gateway_pubkey_file"):
            if sec is not None and getattr(sec, key):
                yield f"fleet[{i}].endpoint.secure.{key}", getattr(sec, key)


def resolve_path(scenario: Scenario, rel: str) -> Path:
    """A path named in a scenario, taken relative to the scenario file's folder."""
    p = Path(rel)
    base = getattr(scenario, "_source_dir", None) or Path.cwd()
    return p if p.is_absolute() else base / p


def source_of(scenario: Scenario) -> str:
    """The file a scenario came from (for messages), or its name when built in code."""
    src = getattr(scenario, "_source_file", None)
    return str(src) if src is not None else f"scenario {scenario.name}"


def export_schema(out: str | Path) -> None:
    """Write the JSON Schema editors use to complete scenario keys."""
    Path(out).write_text(json.dumps(Scenario.model_json_schema(), indent=1) + "\n")
