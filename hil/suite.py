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
              only: list[str] | None = None, progress=None, on_case=None,
              keep_recordings: str = "failed") -> tuple[Suite, list[CaseResult]]:
    """Run the suite's cases in order. `on_case(i, n, name, result_or_None)` is called before
    (None) and after each case; `progress(done_s, total_s)` during one. Each case records its
    links (links.jsonl, for `gridtwin hil replay`); `keep_recordings` "failed" deletes the
    recording of a passed case, "all" keeps every one."""
    suite, base = load_suite(path)
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    cases = [c for c in suite.cases if not only or (c.name or Path(c.scenario).stem) in only]
    results = []
    for i, c in enumerate(cases, 1):
        if on_case:
            on_case(i, len(cases), c.name or Path(c.scenario).stem, None)
        r = run_case(c, base, out_root, short, progress)
        rec = Path(r.out) / "links.jsonl" if r.out else None
        if rec is not None and r.passed and keep_recordings == "failed" and rec.exists():
            rec.unlink()
        results.append(r)
        if on_case:
            on_case(i, len(cases), r.name, r)
    return suite, results


def recording(r: CaseResult) -> Path | None:
    """The case's links.jsonl if it was kept."""
    p = Path(r.out) / "links.jsonl" if r.out else None
    return p if p is not None and p.exists() else None


def totals_line(suite: Suite, results: list[CaseResult], out_root, junit: str | None = None) -> str:
    n_pass = sum(r.passed for r in results)
    n_err = sum(1 for r in results if r.error is not None and not r.assertions and not r.passed)
    n_fail = len(results) - n_pass - n_err
    n_as = sum(len(r.assertions) for r in results)
    n_as_ok = sum(a["passed"] for r in results for a in r.assertions)
    return (f"suite {suite.name}: {n_pass} passed, {n_fail} failed, {n_err} errors "
            f"({n_as_ok}/{n_as} assertions) in {sum(r.wall_s for r in results):.1f} s; results in {out_root}"
            + (f"; JUnit {junit}" if junit else ""))


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
        out_lines = [f"{'pass' if a['passed'] else 'FAIL'}: {a['kpi']} {a['op']} {a['value']} "
                     f"(actual {a['actual']})" for a in r.assertions]
        if r.out:
            out_lines.append(f"results: {r.out}")
            rec = recording(r)
            if rec is not None:
                out_lines.append(f"replay: gridtwin hil replay {r.out}")
        if r.error is not None and not r.assertions:
            e = ET.SubElement(tc, "error", message=r.error.splitlines()[0][:500])
            e.text = r.error
        elif not r.passed:
            failed = [a for a in r.assertions if not a["passed"]]
            msg = "; ".join(f"{a['kpi']} {a['op']} {a['value']} (actual {a['actual']})" for a in failed)
            f = ET.SubElement(tc, "failure", message=msg[:500] or (r.error or "failed"),
                              type="AssertionError")
            f.text = "\n".join(out_lines) if out_lines else r.error
        if out_lines:
            ET.SubElement(tc, "system-out").text = "\n".join(out_lines)
    ET.indent(ts)
    return ET.tostring(ts, encoding="unicode", xml_declaration=True) + "\n"


def print_table(suite: Suite, results: list[CaseResult], console=None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    t = Table(title=f"HIL suite {suite.name}")
    t.add_column("case", overflow="fold", min_width=16)  # long case names wrap, never cut
    for col in ("result", "passed", "sim x", "wall s"):  # passed: assertions; sim x: sim s per wall s
        t.add_column(col, no_wrap=True)
    t.add_column("note", overflow="fold", min_width=16)
    for r in results:
        n_ok = sum(a["passed"] for a in r.assertions)
        note = ""
        if r.error:
            note = r.error.splitlines()[0][:200]
        elif not r.passed:
            a = next(a for a in r.assertions if not a["passed"])
            note = f"{a['kpi']} {a['op']} {a['value']} (actual {a['actual']})"
        t.add_row(r.name, "[green]PASS[/]" if r.passed else "[bold red]FAIL[/]",
                  f"{n_ok}/{len(r.assertions)}", str(r.hil.get("sim_s_per_wall_s", "")),
                  f"{r.wall_s:.1f}", note)
    console.print(t)
