"""Run results: runs/<scenario>-<utc>/ with timeseries.parquet, events.jsonl, summary.json,
report.html (and <name>.parquet for each table an attached part leaves in
twin.kpi_extra["_tables"], e.g. tcl_tracking.parquet: the samples its KPI is computed on);
plus evaluation of the scenario's assertions on the summary."""

from __future__ import annotations

import json
import operator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from twin.events import finite

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
       "==": lambda a, b: abs(a - b) <= 1e-9 * max(1.0, abs(b))}


def run_dir(root: str | Path, scenario_name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    d = Path(root) / f"{scenario_name}-{stamp}"
    d.mkdir(parents=True, exist_ok=False)
    return d


def summarize(twin, wall_s: float) -> dict:
    """KPIs of a finished run: energy by class, voltage extremes, violation minutes, losses."""
    s = twin.scenario
    cols = twin.recorder.cols
    # the recorder samples every rec_every device steps: integrate with that real interval,
    # not the nominal timeseries_every_s (which a device step need not divide)
    dt_rec_h = twin.rec_every * twin.dt_s / 3600.0
    head = np.asarray(cols.get("head_p_kw", []), dtype=float)
    unsolved = int(np.count_nonzero(~np.isfinite(head)))

    def integral(key):
        arr = np.asarray(cols.get(key, []), dtype=float)
        return float(np.nansum(arr) * dt_rec_h)

    def extreme(key, fn):
        arr = np.asarray(cols.get(key, []), dtype=float)
        return float(fn(arr)) if arr.size and np.isfinite(arr).any() else None

    pf_minutes = s.power_flow_interval_s / 60.0
    kinds = {}
    for f in twin.fleets.values():
        kinds[f.KIND] = kinds.get(f.KIND, 0.0) + f.energy_kwh
    viol = {"v_low": 0, "v_high": 0, "line_overload": 0, "trafo_overload": 0}
    viol.update(twin.violation_by_kind)
    summary = {
        "scenario": s.name,
        "start": s.start.isoformat(),
        "duration_s": s.duration_s,
        "device_steps": twin.step_index,
        "power_flows": twin.pf.runs,
        "power_flow": {
            "runs": twin.pf.runs,
            "failed_intervals": getattr(twin, "failed_intervals", 0),
            "full_runs": getattr(twin.pf, "full_runs", twin.pf.runs),  # pandapower.runpp calls
            # energies below integrate the converged samples only; this is the time they miss
            "unsolved_samples": unsolved,
            "unsolved_h": round(unsolved * dt_rec_h, 6),
        },
        "timeseries_interval_s": twin.rec_every * twin.dt_s,
        "wall_s": round(wall_s, 3),
        "speedup": round(s.duration_s / wall_s, 1) if wall_s > 0 else None,
        "energy_kwh": {
            "head_import": round(integral("head_p_kw"), 3),
            "losses": round(integral("losses_kw"), 3),
            "base_load": round(integral("base_load_kw"), 3),
            "feeder_sgen": round(integral("feeder_sgen_kw"), 3),
            **{k: round(v, 3) for k, v in kinds.items()},
        },
        "voltage": {"min_pu": extreme("v_min_pu", np.nanmin), "max_pu": extreme("v_max_pu", np.nanmax)},
        "loading": {"line_max_pct": extreme("line_loading_max_pct", np.nanmax),
                    "trafo_max_pct": extreme("trafo_loading_max_pct", np.nanmax)},
        "head": {"p_max_kw": extreme("head_p_kw", np.nanmax), "p_min_kw": extreme("head_p_kw", np.nanmin)},
        "violations": {"minutes": twin.violation_intervals * pf_minutes,
                       "intervals": twin.violation_intervals,
                       "by_kind_intervals": viol},
        "groups": {name: f.kpis() for name, f in twin.fleets.items()},
        "faults": len(twin.events.of_kind("fault_start")),
    }
    for k, v in twin.kpi_extra.items():
        if not k.startswith("_"):
            summary[k] = v
    return summary


def lookup(summary: dict, dotted: str):
    cur = summary
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            raise KeyError(dotted)
        cur = cur[part]
    return cur


def evaluate_assertions(summary: dict, assertions) -> list[dict]:
    """Each assertion with its actual value and pass/fail; unknown KPI paths fail clearly."""
    out = []
    for a in assertions:
        try:
            actual = lookup(summary, a.kpi)
            ok = actual is not None and bool(OPS[a.op](float(actual), a.value))
        except KeyError:
            actual, ok = "missing", False
        except (TypeError, ValueError):
            ok = False
        out.append({"kpi": a.kpi, "op": a.op, "value": a.value, "actual": actual, "passed": ok})
    return out


def write_results(twin, out: Path, wall_s: float) -> dict:
    """Write the four result files; return the summary (with assertion results)."""
    pq.write_table(twin.recorder.table(), out / "timeseries.parquet")
    for name, cols in twin.kpi_extra.get("_tables", {}).items():  # samples a KPI is computed on
        import pyarrow as pa

        pq.write_table(pa.table(cols), out / f"{name}.parquet")
    twin.events.write(out / "events.jsonl")
    summary = summarize(twin, wall_s)
    summary["assertions"] = evaluate_assertions(summary, twin.scenario.assertions)
    summary = finite(summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str, allow_nan=False) + "\n")
    if twin.scenario.outputs.report:
        from twin.report import write_report

        net = twin.net
        write_report(out / "report.html", twin.recorder.table().to_pandas(), summary,
                     bus_names={f"bus{int(b)}": str(net.bus.at[b, "name"]) for b in net.bus.index},
                     limits=twin.scenario.feeder.limits.model_dump())
    return summary
