"""Issue 16: random mutations of the shipped scenarios (wrong types, NaN, huge values, deleted
keys) given to `gridtwin validate` never end in anything but ok or a one-line user error."""

import copy
import math
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scenario_input import ROOT

SHIPPED = sorted((ROOT / "scenarios").glob("*.yaml")) + sorted((ROOT / "scenarios" / "hil").glob("*.yaml"))
# The SimBench ones build a slow feeder once per process (cached); keep them in, they are few.
DOCS = [(p, yaml.safe_load(p.read_text())) for p in SHIPPED]

BAD_VALUES = [None, "x", "", [], {}, [1, "a"], {"z": 1}, True, math.nan, math.inf, -math.inf, 1e300, -1e300,
              10**30, -(10**30), 0, -1, 2**63, "nan", "1e999", "2026-13-45T99:00:00Z", "9999-12-31T23:00:00Z", "\x00\uffff",
              {"dist": "uniform", "low": -1e308, "high": 1e308}, {"dist": "normal", "mean": 0, "std": 1e308},
              {"dist": "choice", "values": [1e308, -1e308], "weights": [1e308, 1e308]}]


def paths(node, prefix=()):
    """Every key path into a YAML document."""
    yield prefix
    if isinstance(node, dict):
        for k, v in node.items():
            yield from paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from paths(v, (*prefix, i))


def mutate(doc, path, how):
    doc = copy.deepcopy(doc)
    if not path:
        return how if how is not None else doc
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    if how == "<delete>":
        del parent[path[-1]]
    else:
        parent[path[-1]] = how
    return doc


@st.composite
def mutated(draw):
    src, doc = draw(st.sampled_from(DOCS))
    for _ in range(draw(st.integers(1, 3))):
        all_paths = list(paths(doc))[1:]
        path = draw(st.sampled_from(all_paths))
        how = draw(st.sampled_from(["<delete>", *BAD_VALUES]))
        doc = mutate(doc, path, how)
    return src, doc


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=mutated())
def test_validate_never_raises_on_mutations(capsys, tmp_path, case):
    from gridtwin_cli import main

    src, doc = case
    path = Path(tmp_path) / src.name
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    capsys.readouterr()
    rc = main(["validate", str(path)])  # anything but the user-error classes propagates and fails
    out, err = capsys.readouterr()
    assert rc in (0, 2)
    if rc == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and str(path) in lines[0] and "Traceback" not in err, err
        assert len(lines[0]) <= 1600
    else:
        assert f"{path}: ok" in out


def _param_keys():
    from twin.fleet import battery, ev, flex_load, pv, tcl

    return {"pv": sorted(pv.DEFAULTS), "battery": sorted(battery.DEFAULTS), "ev": sorted(ev.DEFAULTS),
            "flex_load": sorted(flex_load.DEFAULTS), "tcl": sorted(tcl.DEFAULTS)}


NUMBERS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(10**20), 10**20),
                    st.sampled_from([0, -1, 1, 1e308, -1e308, 5e-324]))
DISTS = st.one_of(
    NUMBERS,
    st.fixed_dictionaries({"dist": st.just("uniform"), "low": NUMBERS, "high": NUMBERS}),
    st.fixed_dictionaries({"dist": st.just("normal"), "mean": NUMBERS, "std": NUMBERS},
                          optional={"min": NUMBERS, "max": NUMBERS}),
    st.fixed_dictionaries({"dist": st.just("choice"), "values": st.lists(NUMBERS, max_size=4)},
                          optional={"weights": st.lists(NUMBERS, max_size=4)}),
)


@st.composite
def fleet_params(draw):
    keys = _param_keys()
    kind = draw(st.sampled_from(sorted(keys)))
    names = st.one_of(st.sampled_from(keys[kind]), st.text(min_size=1, max_size=8))
    params = draw(st.dictionaries(names, DISTS, max_size=3))
    return kind, params


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(case=fleet_params())
def test_random_fleet_params_never_raise(capsys, tmp_path, case):
    """Any parameter dict for any device kind: validate says ok or one user-error line."""
    from gridtwin_cli import main

    kind, params = case
    doc = {"name": "p", "start": "2026-06-21T10:00:00Z", "duration_s": 600, "feeder": {"kind": "cigre_mv"},
           "fleet": [{"name": "g", "kind": kind, "count": 3, "params": params}]}
    path = Path(tmp_path) / "params.yaml"
    path.write_text(yaml.safe_dump(doc, allow_unicode=True))
    capsys.readouterr()
    rc = main(["validate", str(path)])
    out, err = capsys.readouterr()
    assert rc in (0, 2)
    assert (rc == 0 and "ok" in out) or (len(err.strip().splitlines()) == 1 and str(path) in err), (out, err)
