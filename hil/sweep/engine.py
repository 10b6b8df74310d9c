"""Runs a loaded sweep on Dask: a LocalCluster of one-thread worker processes, or an existing
scheduler (`tcp://host:port`); one row per sample in `sweeps/<name>-<utc>/results.parquet`.

Every finished sample is written at once as `parts/<key>.json` (write + rename), so an
interrupted sweep (Ctrl-C, a killed client or worker) leaves only whole rows behind;
`results.parquet` is rebuilt from the parts (atomically) every few seconds and at the end,
and `--resume DIR` skips every sample whose resolved-scenario hash has a part.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import yaml

from hil.sweep.spec import Sweep, SweepError, resolved_document

FLUSH_EVERY_S = 5.0


def sweep_dir(root: str | Path, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    d = Path(root) / f"{name}-{stamp}"
    n = 1
    while d.exists():
        n += 1
        d = Path(root) / f"{name}-{stamp}-{n}"
    d.mkdir(parents=True)
    return d


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def read_parts(out: Path) -> dict[str, dict]:
    """Finished rows by resume key; a part that does not parse (never expected: writes are
    atomic) is ignored, so the sample runs again."""
    rows = {}
    for p in sorted((out / "parts").glob("*.json")):
        try:
            row = json.loads(p.read_text())
            rows[row["key"]] = row
        except (OSError, ValueError, KeyError):
            continue
    return rows


def results_table(sweep: Sweep, rows: dict[str, dict]) -> pd.DataFrame:
    """One row per finished sample of this sweep, in sample order, parameters and KPIs as columns."""
    spec = sweep.spec
    recs = []
    for s in sweep.samples:
        r = rows.get(s.key)
        if r is None:
            continue
        rec = {"sample_id": s.sample_id, "point": s.point, "replicate": s.replicate, "seed": s.seed}
        rec.update(s.params)
        rec.update({k: r.get(k) for k in spec.kpis})
        rec.update({k: r.get(k) for k in ("status", "error", "wall_s", "worker", "run_dir")})
        rec["key"] = s.key
        recs.append(rec)
    cols = (["sample_id", "point", "replicate", "seed"] + [p.column for p in spec.parameters]
            + list(spec.kpis) + ["status", "error", "wall_s", "worker", "run_dir", "key"])
    df = pd.DataFrame(recs, columns=cols)
    for k in spec.kpis:
        df[k] = pd.to_numeric(df[k], errors="coerce").astype(float)
    for p in spec.parameters:  # a column of mixed kinds (numbers and words) is stored as text
        col = df[p.column]
        if col.map(type).nunique() > 1 and not pd.api.types.is_numeric_dtype(col):
            df[p.column] = col.astype(str)
    return df


def write_table(out: Path, df: pd.DataFrame) -> None:
    import io

    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    _atomic_write(out / "results.parquet", buf.getvalue())


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def check_args(workers: int | None, scheduler: str | None) -> None:
    if scheduler and not scheduler.startswith(("tcp://", "tls://", "ucx://", "inproc://")):
        raise SweepError(f"--scheduler: expected tcp://HOST:PORT (got {scheduler!r})")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers: must be >= 1 (got {workers})")


def start_client(workers: int | None, scheduler: str | None):
    """(client, cluster or None): a LocalCluster of `workers` processes with one thread each, or
    a client of the scheduler at `scheduler`."""
    from distributed import Client, LocalCluster

    check_args(workers, scheduler)
    if scheduler:
        try:
            return Client(scheduler, timeout="20s"), None
        except OSError as e:
            raise SweepError(f"--scheduler: cannot reach {scheduler}: {e}") from None
    n = workers if workers is not None else (os.cpu_count() or 1)
    dash = ":8787" if _port_free(8787) else "127.0.0.1:0"
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                           dashboard_address=dash, silence_logs=logging.ERROR)
    return Client(cluster), cluster


class _Progress:
    """Rich bar: done / failed / running and ETA; nothing when quiet."""

    def __init__(self, quiet: bool, label: str, total: int, done: int):
        self.prog = None
        if quiet:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.prog = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TextColumn("failed {task.fields[failed]}  running {task.fields[running]}"),
                             TimeElapsedColumn(), TimeRemainingColumn())
        self.prog.start()
        self.task = self.prog.add_task(label, total=total, completed=done, failed=0, running=0)

    def update(self, done: int, failed: int, running: int) -> None:
        if self.prog:
            self.prog.update(self.task, completed=done, failed=failed, running=running)

    def close(self) -> None:
        if self.prog:
            self.prog.stop()


def run_sweep(sweep: Sweep, root: str | Path = "sweeps", workers: int | None = None,
              scheduler: str | None = None, resume: str | Path | None = None, quiet: bool = False,
              log=print) -> tuple[pd.DataFrame, Path]:
    """Run every sample not yet in the results; return (results table, sweep folder)."""
    check_args(workers, scheduler)
    if resume:
        out = Path(resume)
        if not (out / "sweep.resolved.yaml").exists():
            raise SweepError(f"--resume: {out} is not a sweep results folder (no sweep.resolved.yaml)")
    else:
        out = sweep_dir(root, sweep.spec.name)
    (out / "parts").mkdir(parents=True, exist_ok=True)
    _atomic_write(out / "sweep.resolved.yaml",
                  yaml.safe_dump(resolved_document(sweep), sort_keys=False).encode())
    rows = read_parts(out)
    todo = [s for s in sweep.samples if s.key not in rows]
    total = len(sweep.samples)
    have = total - len(todo)
    t0 = time.perf_counter()
    interrupted = True
    try:
        if todo:
            _execute(sweep, todo, out, rows, workers, scheduler, quiet, log, have)
        interrupted = False
    except SweepError:  # the cluster could not be reached: a new, empty folder is not left behind
        if not resume and not rows:
            shutil.rmtree(out, ignore_errors=True)
        interrupted = False
        raise
    finally:
        df = results_table(sweep, rows)
        if out.exists():
            write_table(out, df)
        if interrupted:
            log(f"sweep {sweep.spec.name}: stopped with {len(df)} of {total} samples in {out}; "
                f"continue with --resume {out}")
    from hil.sweep.report import write_report

    write_report(out / "report.html", sweep, df)
    failed = int((df["status"] != "ok").sum())
    log(f"sweep {sweep.spec.name}: {len(df)} samples ({have} resumed), {failed} failed, "
        f"{time.perf_counter() - t0:.1f} s; results in {out}")
    return df, out


def _execute(sweep: Sweep, todo, out: Path, rows: dict, workers, scheduler, quiet, log, have) -> None:
    from distributed import wait  # noqa: F401 - import check before the cluster starts

    client, cluster = start_client(workers, scheduler)
    prog = None
    futures = {}
    try:
        nthreads = sum(client.nthreads().values())
        where = scheduler or f"LocalCluster of {len(client.nthreads())} workers"
        log(f"sweep {sweep.spec.name}: {len(sweep.samples)} samples, {len(todo)} to run on {where} "
            f"({nthreads} threads); dashboard: {client.dashboard_link or 'none'}; results: {out}")
        run_root = str((out / "runs").resolve())
        tag = uuid.uuid4().hex[:8]
        for s in todo:
            task = {"sample_id": s.sample_id, "key": s.key, "scenario": s.scenario,
                    "source_dir": str(sweep.source_dir), "kpis": list(sweep.spec.kpis),
                    "keep_runs": sweep.spec.keep_runs, "run_root": run_root}
            from hil.sweep.worker import run_sample

            f = client.submit(run_sample, task, key=f"gridtwin-sample-{s.key}-{tag}", pure=False,
                              priority=-s.sample_id, retries=0)
            futures[f] = s
        prog = _Progress(quiet, sweep.spec.name, len(sweep.samples), have)
        pending = set(futures)
        failed = 0
        last_flush = last_poll = time.monotonic()
        running = 0
        while pending:
            finished = [f for f in pending if f.done()]
            for f in finished:
                pending.discard(f)
                s = futures[f]
                row = _row_of(f, s)
                rows[s.key] = row
                _atomic_write(out / "parts" / f"{s.key}.json", json.dumps(row, default=str).encode())
                failed += row["status"] != "ok"
            now = time.monotonic()
            if now - last_poll > 1.0 or finished:
                try:
                    running = min(len(pending), sum(len(v) for v in client.processing().values()))
                except Exception:  # noqa: BLE001 - the count is cosmetic
                    pass
                last_poll = now
            prog.update(len(rows), failed, running)
            if finished and now - last_flush > FLUSH_EVERY_S:
                write_table(out, results_table(sweep, rows))
                last_flush = now
            if pending and not finished:
                time.sleep(0.1)
    finally:
        if prog:
            prog.close()
        for f in futures:
            if not f.done():
                f.cancel()
        client.close(timeout=10)
        if cluster is not None:
            cluster.close(timeout=20)


def _row_of(f, s) -> dict:
    """A finished future's row; a task Dask itself lost (KilledWorker, cancelled) is an error row."""
    try:
        if f.status == "finished":
            return f.result()
        exc = f.exception() if f.status == "error" else None
        msg = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}" if exc else f.status
    except Exception as e:  # noqa: BLE001
        msg = f"{type(e).__name__}: {e}"
    return {"sample_id": s.sample_id, "key": s.key, "status": "error", "error": msg[:500],
            "worker": "", "run_dir": "", "wall_s": None}
