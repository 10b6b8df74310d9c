"""Regression suites: a YAML list of scenarios run under HIL, each judged by its own
assertions; results as JUnit XML (for CI) and a short rich table.

Suite file (paths relative to the suite file):
    name: regression
    description: ...
    cases:
      - scenario: ../scenarios/hil/dr_delivery.yaml
        name: dr_delivery            # optional, default: the scenario's name
        mode: lockstep               # optional, default: the scenario's hil.mode
        short: {duration_s: 1800, count_max: 10}   # applied with --short (CI)
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from xml.etree import ElementTree as ET

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SuiteError(ValueError):
    """A suite file that cannot be used (one line: file, key, problem)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Short(_Strict):
    duration_s: float | None = Field(None, gt=0, description="simulated duration in the short run")
    count_max: int | None = Field(None, ge=0, description="cap on devices per fleet group")


class Case(_Strict):
    scenario: str
    name: str | None = None
    mode: Literal["lockstep", "realtime"] | None = None
    short: Short = Short()


class Suite(_Strict):
    name: str
    description: str = ""
    cases: list[Case] = Field(min_length=1)


def load_suite(path: str | Path) -> tuple[Suite, Path]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except OSError as e:
        raise SuiteError(f"{p}: cannot read ({e.strerror})") from None
    except yaml.YAMLError as e:
        raise SuiteError(f"{p}: not valid YAML ({str(e).splitlines()[0]})") from None
    try:
        suite = Suite.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "(top level)"
        raise SuiteError(f"{p}: {where}: {err['msg']}") from None
    for c in suite.cases:
        if not (p.parent / c.scenario).is_file():
            raise SuiteError(f"{p}: cases: scenario file {c.scenario!r} not found next to the suite")
    return suite, p.parent


def shorten(scenario, short: Short):
    """The CI version of a scenario: shorter, fewer devices; events beyond the end are dropped."""
    s = scenario.model_copy(deep=True)
    s._source_dir = getattr(scenario, "_source_dir", None)
    if short.duration_s is not None and short.duration_s < s.duration_s:
        s.duration_s = short.duration_s
    if short.count_max is not None:
        for g in s.fleet:
            g.count = min(g.count, short.count_max)
            g.record_devices = min(g.record_devices, g.count)
    return s


@dataclass
class CaseResult:
    name: str
    scenario: str
    passed: bool
    wall_s: float
    assertions: list[dict] = field(default_factory=list)
    error: str | None = None
    out: str | None = None
    hil: dict = field(default_factory=dict)


def run_case(case: Case, base: Path, out_root: Path, short: bool, progress=None) -> CaseResult:
    from hil.coordinator import run_hil
    from scenarios.load import load_scenario

    t0 = time.perf_counter()
    scen_path = base / case.scenario
    name = case.name or Path(case.scenario).stem
    try:
        s = load_scenario(scen_path)
        name = case.name or s.name
        if short:
            s = shorten(s, case.short)
        summary, out = run_hil(s, out_root, progress=progress, mode=case.mode)
    except Exception as e:  # a crashed case is a failed case, the suite goes on
        msg = f"{type(e).__name__}: {e}"
        return CaseResult(name, str(scen_path), False, time.perf_counter() - t0, error=msg + "\n"
                          + traceback.format_exc(limit=6))
    asserts = summary.get("assertions", [])
    ok = bool(asserts) and all(a["passed"] for a in asserts)
    return CaseResult(name, str(scen_path), ok, time.perf_counter() - t0, asserts,
                      None if asserts else "scenario has no assertions", str(out), summary.get("hil", {}))


def run_suite(path: str | Path, out_root: str | Path = "runs/hil", short: bool = False,
              only: list[str] | None = None, progress=None) -> tuple[Suite, list[CaseResult]]:
    suite, base = load_suite(path)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    results = []
    for c in suite.cases:
        if only and (c.name or Path(c.scenario).stem) not in only:
            continue
        results.append(run_case(c, base, out_root, short, progress))
    return suite, results


def junit_xml(suite: Suite, results: list[CaseResult]) -> str:
    """JUnit XML: one testcase per scenario; failed assertions / errors as failure/error."""
    ts = ET.Element("testsuite", name=suite.name, tests=str(len(results)),
                    failures=str(sum(1 for r in results if not r.passed and r.error is None)),
                    errors=str(sum(1 for r in results if r.error is not None and not r.assertions)),
                    time=f"{sum(r.wall_s for r in results):.3f}")
    for r in results:
        tc = ET.SubElement(ts, "testcase", classname=f"hil.{suite.name}", name=r.name, time=f"{r.wall_s:.3f}")
        props = ET.SubElement(tc, "properties")
        for a in r.assertions:
            ET.SubElement(props, "property", name=f"{a['kpi']} {a['op']} {a['value']}",
                          value=f"{a['actual']} ({'pass' if a['passed'] else 'FAIL'})")
        if r.out:
            ET.SubElement(props, "property", name="results", value=r.out)
        if r.error is not None and not r.assertions:
            e = ET.SubElement(tc, "error", message=r.error.splitlines()[0][:500])
            e.text = r.error
        elif not r.passed:
            failed = [a for a in r.assertions if not a["passed"]]
            msg = "; ".join(f"{a['kpi']} {a['op']} {a['value']} (actual {a['actual']})" for a in failed)
            f = ET.SubElement(tc, "failure", message=msg[:500] or (r.error or "failed"))
            f.text = msg or r.error
    ET.indent(ts)
    return ET.tostring(ts, encoding="unicode", xml_declaration=True) + "\n"


def print_table(suite: Suite, results: list[CaseResult], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"HIL suite {suite.name}")
    for col in ("case", "result", "assertions", "sim s / wall s", "wall s", "note"):
        t.add_column(col)
    for r in results:
        n_ok = sum(a["passed"] for a in r.assertions)
        note = ""
        if r.error:
            note = r.error.splitlines()[0][:70]
        elif not r.passed:
            a = next(a for a in r.assertions if not a["passed"])
            note = f"{a['kpi']} {a['op']} {a['value']} (actual {a['actual']})"[:70]
        t.add_row(r.name, "[green]PASS[/]" if r.passed else "[bold red]FAIL[/]",
                  f"{n_ok}/{len(r.assertions)}", str(r.hil.get("sim_s_per_wall_s", "")),
                  f"{r.wall_s:.1f}", note)
    console.print(t)
