"""Historian: everything the controller saw, decided and was told, in one SQLite file.

WAL journal; each cycle is ONE transaction (telemetry, setpoints, decisions, DR performance,
the cycle row), so a kill -9 leaves whole cycles or nothing. `synchronous=FULL` (default)
also survives power loss; NORMAL is enough against process kills (WAL pages are in the OS
cache) and is what in-memory/HIL runs use. On restart the controller reads its active DR
events, the latest schedule and the operator's out-of-service list back from here.

Writes go through one connection under a lock; reads use one connection per thread (WAL lets
readers run beside the writer), so an API query never holds up the cycle's write. Files are
created 0600; `InstanceLock` keeps a second service off the same state directory.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS cycles (n INTEGER PRIMARY KEY, t REAL NOT NULL, read_ms REAL,
  estimate_ms REAL, optimize_ms REAL, dr_ms REAL, gate_ms REAL, write_ms REAL, total_ms REAL,
  n_commands INTEGER, n_written INTEGER, n_unavailable INTEGER);
CREATE TABLE IF NOT EXISTS telemetry (cycle INTEGER NOT NULL, t REAL NOT NULL,
  device_id TEXT NOT NULL, name TEXT NOT NULL, value REAL, quality TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS telemetry_dev ON telemetry(device_id, t);
CREATE INDEX IF NOT EXISTS telemetry_cycle ON telemetry(cycle);
CREATE TABLE IF NOT EXISTS setpoints (cycle INTEGER, t REAL NOT NULL, device_id TEXT NOT NULL,
  setpoint TEXT NOT NULL, value REAL, source TEXT, ok INTEGER);
CREATE TABLE IF NOT EXISTS decisions (cycle INTEGER, t REAL NOT NULL, device_id TEXT,
  setpoint TEXT, requested REAL, verdict TEXT, sent REAL, source TEXT, reasons TEXT);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY, t REAL NOT NULL, kind TEXT NOT NULL,
  data TEXT);
CREATE TABLE IF NOT EXISTS dr_events (id TEXT PRIMARY KEY, start_t REAL NOT NULL,
  duration_s REAL NOT NULL, reduction_kw REAL NOT NULL, groups TEXT, source TEXT,
  status TEXT NOT NULL, opt TEXT NOT NULL DEFAULT 'in', created_t REAL, updated_t REAL);
CREATE TABLE IF NOT EXISTS dr_performance (event_id TEXT NOT NULL, cycle INTEGER, t REAL,
  requested_kw REAL, delivered_kw REAL);
CREATE TABLE IF NOT EXISTS schedules (id INTEGER PRIMARY KEY, created_t REAL, t0 REAL,
  step_s REAL, kind TEXT, data TEXT);
CREATE TABLE IF NOT EXISTS alarms (id INTEGER PRIMARY KEY, t REAL NOT NULL, kind TEXT NOT NULL,
  device_id TEXT, message TEXT, active INTEGER DEFAULT 1, acked_by TEXT, acked_t REAL);
CREATE TABLE IF NOT EXISTS audit (id INTEGER PRIMARY KEY, t REAL NOT NULL, user TEXT,
  role TEXT, action TEXT NOT NULL, target TEXT, data TEXT, ok INTEGER);
CREATE TABLE IF NOT EXISTS service (device_id TEXT PRIMARY KEY, in_service INTEGER NOT NULL,
  by TEXT, t REAL);
"""

QUERYABLE = {"cycles", "telemetry", "setpoints", "decisions", "events", "dr_events",
             "dr_performance", "schedules", "alarms", "audit"}
MAX_ROWS = 100_000  # largest result one query returns (the API pages far below this)


class InstanceLockError(RuntimeError):
    """Another process holds the state directory (one line naming the lock file)."""


class InstanceLock:
    """An exclusive flock on `<state dir>/.controller.lock`, held for the process's life: a
    second service on the same historian is refused at start. The kernel drops it when the
    process dies, kill -9 included, so a restart never finds a stale lock."""

    def __init__(self, historian_path: str | Path):
        d = Path(historian_path).resolve().parent
        d.mkdir(parents=True, exist_ok=True)
        self.path = d / ".controller.lock"
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(self._fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(self._fd)
            raise InstanceLockError(f"{d}: state directory is in use by another controller "
                                    f"(pid {holder}, lock {self.path}); stop it first") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _json(obj) -> str:
    """json.dumps(obj), byte for byte, with each row object of a list of lists encoded once: a
    schedule's setpoint matrices share one list per distinct device row (every PV at 100 % for
    all 96 steps; FleetScheduler._data), and formatting floats is where json.dumps spends its
    time."""
    if isinstance(obj, dict) and all(type(k) is str for k in obj):
        return "{" + ", ".join(f"{json.dumps(k)}: {_json(v)}" for k, v in obj.items()) + "}"
    if type(obj) is list and obj and all(type(r) is list for r in obj):
        memo: dict[int, str] = {}  # id(row) -> its JSON; the rows are alive while obj is
        return "[" + ", ".join([memo.get(id(r)) or memo.setdefault(id(r), json.dumps(r)) for r in obj]) + "]"
    return json.dumps(obj)


def _create_private(path: str) -> None:
    """Create the database file (and its WAL/SHM companions, which SQLite opens with the
    database's mode) readable by the owner only; tighten an existing file's mode too."""
    for f in (path, path + "-wal", path + "-shm"):
        if os.path.exists(f):
            if os.stat(f).st_mode & 0o077:
                os.chmod(f, 0o600)
        elif f == path:
            os.close(os.open(f, os.O_WRONLY | os.O_CREAT, 0o600))


class Historian:
    def __init__(self, path: str | Path = ":memory:", synchronous: str = "FULL"):
        if synchronous not in ("FULL", "NORMAL"):
            raise ValueError(f"historian synchronous={synchronous!r}: use FULL or NORMAL")
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            _create_private(self.path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10.0)
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(SCHEMA)
        self._local = threading.local()  # per-thread read connection (file databases)
        self._readers: list[sqlite3.Connection] = []
        self._closed = False

    # --- plumbing --------------------------------------------------------------------------
    def _tx(self, fn):
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = fn(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return out

    def _reader(self) -> sqlite3.Connection | None:
        """This thread's read-only connection; None for an in-memory database (one connection)."""
        if self.path == ":memory:":
            return None
        db = getattr(self._local, "db", None)
        if db is None:
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10.0)
            db.execute("PRAGMA query_only=1")
            self._local.db = db
            with self._lock:
                self._readers.append(db)
        return db

    def _rows(self, sql: str, args=(), pause=None) -> list[dict]:
        db = self._reader()
        if db is None:
            with self._lock:
                return self._fetch(self._db, sql, args)
        return self._fetch(db, sql, args, pause)

    @staticmethod
    def _fetch(db, sql, args, pause=None) -> list[dict]:
        """Rows as dicts; `pause()` is called between chunks of 500 (the API steps aside for
        the cycle there)."""
        cur = db.execute(sql, args)
        cols = [c[0] for c in cur.description]
        if pause is None:
            return [dict(zip(cols, r)) for r in cur.fetchall()]
        out = []
        while chunk := cur.fetchmany(500):
            out += [dict(zip(cols, r)) for r in chunk]
            pause()
        return out

    def close(self) -> None:
        with self._lock:
            for db in self._readers:
                db.close()
            self._readers.clear()
            self._db.close()

    # --- cycles ------------------------------------------------------------------------------
    def last_cycle(self) -> int:
        r = self._rows("SELECT MAX(n) AS n FROM cycles")
        return int(r[0]["n"]) if r and r[0]["n"] is not None else 0

    def record_cycle(self, n: int, t: float, timings: dict, telemetry: list[tuple],
                     setpoints: list[tuple], decisions: list[tuple], dr_perf: list[tuple],
                     counts: tuple[int, int, int]) -> None:
        """One atomic transaction per cycle. telemetry rows: (device_id, name, value, quality);
        setpoints: (device_id, setpoint, value, source, ok); decisions: (device_id, setpoint,
        requested, verdict, sent, source, reasons); dr_perf: (event_id, requested, delivered)."""

        def w(db):
            db.executemany("INSERT INTO telemetry VALUES (?,?,?,?,?,?)",
                           ((n, t, *r) for r in telemetry))
            db.executemany("INSERT INTO setpoints VALUES (?,?,?,?,?,?,?)",
                           ((n, t, *r) for r in setpoints))
            db.executemany("INSERT INTO decisions VALUES (?,?,?,?,?,?,?,?,?)",
                           ((n, t, *r) for r in decisions))
            db.executemany("INSERT INTO dr_performance VALUES (?,?,?,?,?)",
                           ((e, n, t, rq, dl) for e, rq, dl in dr_perf))
            db.execute("INSERT INTO cycles VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                       (n, t, *(timings.get(k) for k in ("read_ms", "estimate_ms", "optimize_ms",
                                                          "dr_ms", "gate_ms", "write_ms",
                                                          "total_ms")), *counts))

        self._tx(w)

    # --- events / alarms / audit ---------------------------------------------------------------
    def log_event(self, t: float, kind: str, **data) -> None:
        self._tx(lambda db: db.execute("INSERT INTO events (t, kind, data) VALUES (?,?,?)",
                                       (t, kind, json.dumps(data, default=str))))

    def events_of(self, kind: str) -> list[dict]:
        """Logged events of one kind, oldest first, with their data decoded."""
        return [{"t": r["t"], **json.loads(r["data"] or "{}")}
                for r in self._rows("SELECT t, data FROM events WHERE kind=? ORDER BY id", (kind,))]

    def raise_alarm(self, t: float, kind: str, device_id: str | None, message: str) -> int | None:
        """New alarm unless the same (kind, device) is already active; returns its id."""

        def w(db):
            r = db.execute("SELECT id FROM alarms WHERE kind=? AND device_id IS ? AND active=1",
                           (kind, device_id)).fetchone()
            if r:
                return None
            return db.execute("INSERT INTO alarms (t, kind, device_id, message) VALUES (?,?,?,?)",
                              (t, kind, device_id, message)).lastrowid

        return self._tx(w)

    def clear_alarm(self, kind: str, device_id: str | None) -> None:
        self._tx(lambda db: db.execute("UPDATE alarms SET active=0 WHERE kind=? AND device_id IS ?",
                                       (kind, device_id)))

    def ack_alarm(self, alarm_id: int, user: str, t: float) -> bool:
        cur = self._tx(lambda db: db.execute(
            "UPDATE alarms SET acked_by=?, acked_t=? WHERE id=?", (user, t, alarm_id)))
        return cur.rowcount > 0

    def alarms(self, active_only: bool = False, limit: int | None = None) -> list[dict]:
        """Alarms oldest first; with `limit`, the newest `limit` of them."""
        q = "SELECT * FROM alarms" + (" WHERE active=1" if active_only else "")
        if limit is None:
            return self._rows(q + " ORDER BY id")
        return self._rows(q + f" ORDER BY id DESC LIMIT {max(1, min(int(limit), MAX_ROWS))}")[::-1]

    def audit(self, t: float, user: str, role: str, action: str, target: str = "",
              data: dict | None = None, ok: bool = True) -> None:
        self._tx(lambda db: db.execute(
            "INSERT INTO audit (t, user, role, action, target, data, ok) VALUES (?,?,?,?,?,?,?)",
            (t, user, role, action, target, json.dumps(data or {}, default=str), int(ok))))

    # --- DR events ---------------------------------------------------------------------------
    def upsert_dr_event(self, ev: dict, t: float) -> None:
        self._tx(lambda db: db.execute(
            "INSERT INTO dr_events (id, start_t, duration_s, reduction_kw, groups, source, status,"
            " opt, created_t, updated_t) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET"
            " start_t=excluded.start_t, duration_s=excluded.duration_s,"
            " reduction_kw=excluded.reduction_kw, groups=excluded.groups, status=excluded.status,"
            " opt=excluded.opt, updated_t=excluded.updated_t",
            (ev["id"], ev["start_t"], ev["duration_s"], ev["reduction_kw"],
             json.dumps(ev.get("groups")), ev.get("source", "api"), ev.get("status", "pending"),
             ev.get("opt", "in"), t, t)))

    def set_dr_status(self, event_id: str, status: str, t: float) -> bool:
        cur = self._tx(lambda db: db.execute(
            "UPDATE dr_events SET status=?, updated_t=? WHERE id=?", (status, t, event_id)))
        return cur.rowcount > 0

    def dr_events(self, statuses: tuple[str, ...] | None = None) -> list[dict]:
        rows = self._rows("SELECT * FROM dr_events ORDER BY start_t, id")
        for r in rows:
            r["groups"] = json.loads(r["groups"]) if r["groups"] else None
        return [r for r in rows if statuses is None or r["status"] in statuses]

    def dr_performance(self, event_id: str) -> list[dict]:
        return self._rows("SELECT * FROM dr_performance WHERE event_id=? ORDER BY cycle", (event_id,))

    # --- schedules / service --------------------------------------------------------------------
    def add_schedule(self, created_t: float, t0: float, step_s: float, kind: str, data: dict) -> int:
        return self._tx(lambda db: db.execute(
            "INSERT INTO schedules (created_t, t0, step_s, kind, data) VALUES (?,?,?,?,?)",
            (created_t, t0, step_s, kind, _json(data)))).lastrowid

    def latest_schedule(self) -> dict | None:
        r = self._rows("SELECT * FROM schedules ORDER BY id DESC LIMIT 1")
        if not r:
            return None
        r[0]["data"] = json.loads(r[0]["data"])
        return r[0]

    def set_service(self, device_id: str, in_service: bool, by: str, t: float) -> None:
        self._tx(lambda db: db.execute(
            "INSERT INTO service VALUES (?,?,?,?) ON CONFLICT(device_id) DO UPDATE SET"
            " in_service=excluded.in_service, by=excluded.by, t=excluded.t",
            (device_id, int(in_service), by, t)))

    def out_of_service(self) -> set[str]:
        return {r["device_id"] for r in self._rows("SELECT device_id FROM service WHERE in_service=0")}

    def last_setpoints(self) -> dict[tuple[str, str], float]:
        """{(device_id, setpoint): value} of the last confirmed write of each setpoint (what the
        controller believes its devices hold; controller/reconcile.py at start)."""
        rows = self._rows("SELECT device_id, setpoint, value, MAX(rowid) AS r FROM setpoints"
                          " WHERE ok=1 GROUP BY device_id, setpoint")
        return {(r["device_id"], r["setpoint"]): r["value"] for r in rows if r["value"] is not None}

    # --- queries (API) -------------------------------------------------------------------------
    def cycles_after(self, n: int, limit: int = MAX_ROWS) -> list[dict]:
        """Cycle timing rows numbered above n, oldest first (metrics)."""
        return self._rows("SELECT * FROM cycles WHERE n > ? ORDER BY n LIMIT ?", (int(n), int(limit)))

    def alarm_counts(self) -> dict[str, tuple[int, int]]:
        """{kind: (active, raised)} over all alarms (metrics)."""
        return {r["kind"]: (int(r["a"] or 0), int(r["n"]))
                for r in self._rows("SELECT kind, SUM(active) AS a, COUNT(*) AS n FROM alarms GROUP BY kind")}

    def good_values(self, name: str, device_ids: list[str], since_t: float, until_t: float) -> list[dict]:
        """Good, non-null telemetry rows {t, device_id, value} of quantity `name` for the
        devices in [since_t, until_t) (baselines, forecasts)."""
        if not device_ids:
            return []
        marks = ",".join("?" * len(device_ids))
        return self._rows("SELECT t, device_id, value FROM telemetry WHERE name=? AND quality='good'"
                          f" AND value IS NOT NULL AND t >= ? AND t < ? AND device_id IN ({marks})",
                          (name, since_t, until_t, *device_ids))

    def query(self, table: str, since: float | None = None, until: float | None = None,
              device_id: str | None = None, limit: int = 1000, before: int | None = None,
              with_rowid: bool = False, pause=None) -> list[dict]:
        """The newest `limit` rows (oldest first) matching the filters; `before` pages back:
        only rows with a rowid below it (the previous page's smallest `_rowid`)."""
        if table not in QUERYABLE:
            raise ValueError(f"unknown historian table {table!r}; known: {sorted(QUERYABLE)}")
        tcol = {"dr_events": "start_t", "schedules": "created_t"}.get(table, "t")
        where, args = [], []
        if since is not None:
            where.append(f"{tcol} >= ?")
            args.append(since)
        if until is not None:
            where.append(f"{tcol} <= ?")
            args.append(until)
        if device_id is not None and table in ("telemetry", "setpoints", "decisions", "alarms"):
            where.append("device_id = ?")
            args.append(device_id)
        if before is not None:
            where.append("rowid < ?")
            args.append(int(before))
        sql = (f"SELECT {'rowid AS _rowid, ' if with_rowid else ''}* FROM {table}"
               + (" WHERE " + " AND ".join(where) if where else ""))
        sql += f" ORDER BY rowid DESC LIMIT {max(1, min(int(limit), MAX_ROWS))}"
        return self._rows(sql, args, pause)[::-1]
