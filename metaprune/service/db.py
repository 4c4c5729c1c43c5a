"""The service's database: jobs, their state, and an append-only event log, in SQLite.

One file, ``RUNS_DIR/service.sqlite3``; it survives restarts (and ``kill -9``: SQLite's journal
keeps it consistent). The run directories stay the source of truth for what a job produced; the
database only knows which jobs the service started and what happened to them.

Job states: ``queued`` -> ``running`` -> ``done`` | ``failed`` | ``cancelled`` | ``interrupted``
(the server went away while it ran; it can be resumed as a new job).

One writer per run: a unique partial index allows one active (queued or running) job per run, so
the check and the insert of :meth:`Database.create_job` are one atomic step; a second job for a busy
run raises :class:`RunBusy`, however many requests race.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

DB_FILE = "service.sqlite3"
ACTIVE = ("queued", "running")
FINAL = ("done", "failed", "cancelled", "interrupted")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,              -- meta-train | search | train
    run TEXT NOT NULL,               -- run name (a directory under the runs directory)
    params TEXT NOT NULL,            -- the validated request, JSON
    argv TEXT NOT NULL,              -- the metaprune command line, JSON (no executable)
    state TEXT NOT NULL,
    threads INTEGER,
    pid INTEGER,
    created REAL NOT NULL,
    started REAL,
    ended REAL,
    exit_code INTEGER,
    error TEXT,
    resumes INTEGER                  -- the job this one resumes
);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job INTEGER NOT NULL,
    ts REAL NOT NULL,
    type TEXT NOT NULL,              -- state | progress
    data TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events(job, id);
"""
_ONE_ACTIVE = ("CREATE UNIQUE INDEX IF NOT EXISTS one_active_job_per_run ON jobs(run) "
               "WHERE state IN ('queued', 'running')")
DUPLICATE = "refused: another job of this run was active (one job per run at a time)"


class RunBusy(Exception):
    """The run already has an active job (``job``: that job)."""

    def __init__(self, job: dict | None):
        super().__init__(f"run busy with job {job and job['id']}")
        self.job = job

_JOB_FIELDS = ("kind", "run", "params", "argv", "state", "threads", "pid", "created", "started", "ended",
               "exit_code", "error", "resumes")


class Database:
    """Thread-safe access to the jobs and events tables (one connection, one lock)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._con = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None)
        self._con.row_factory = sqlite3.Row
        with self._lock:
            self._con.execute("PRAGMA journal_mode=WAL")
            self._con.execute("PRAGMA synchronous=NORMAL")
            self._con.executescript(_SCHEMA)
            self._dedupe_active()
            self._con.execute(_ONE_ACTIVE)

    def _dedupe_active(self) -> None:
        """A database from before the index may hold several active jobs of one run: the oldest stays."""
        rows = self._con.execute("SELECT id, run FROM jobs WHERE state IN ('queued', 'running') ORDER BY id").fetchall()
        seen: set[str] = set()
        now = time.time()
        for r in rows:
            if r["run"] in seen:
                self._con.execute("UPDATE jobs SET state='failed', ended=?, error=? WHERE id=?",
                                  (now, DUPLICATE, r["id"]))
                self._event(r["id"], "state", {"state": "failed", "error": DUPLICATE}, now)
            seen.add(r["run"])

    def close(self) -> None:
        with self._lock:
            self._con.close()

    # jobs -----------------------------------------------------------------------------------------
    def create_job(self, kind: str, run: str, params: dict, argv: list[str], resumes: int | None = None,
                   new_run: bool = False) -> dict:
        """Insert a queued job; :class:`RunBusy` if ``run`` has an active job (or, with ``new_run``,
        any job at all: the name is taken). Check and insert are one transaction."""
        now = time.time()
        with self._lock:
            self._con.execute("BEGIN IMMEDIATE")
            try:
                states = "" if new_run else " AND state IN ('queued', 'running')"
                row = self._con.execute(f"SELECT * FROM jobs WHERE run=?{states} ORDER BY id DESC LIMIT 1",
                                        (run,)).fetchone()
                if row is not None:
                    raise RunBusy(_job(row))
                try:
                    cur = self._con.execute(
                        "INSERT INTO jobs (kind, run, params, argv, state, created, resumes) VALUES (?,?,?,?,?,?,?)",
                        (kind, run, json.dumps(params), json.dumps(argv), "queued", now, resumes))
                except sqlite3.IntegrityError:  # another connection (not this server's) got there first
                    raise RunBusy(None) from None
                job_id = cur.lastrowid
                self._event(job_id, "state", {"state": "queued"}, now)
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise
        return self.job(job_id)

    def job(self, job_id: int) -> dict | None:
        with self._lock:
            row = self._con.execute("SELECT * FROM jobs WHERE id=?", (job_id,)).fetchone()
        return _job(row) if row else None

    def jobs(self, *, run: str | None = None, states: tuple[str, ...] | None = None, limit: int = 200) -> list[dict]:
        sql, args = "SELECT * FROM jobs", []
        where = []
        if run is not None:
            where.append("run=?")
            args.append(run)
        if states:
            where.append(f"state IN ({','.join('?' * len(states))})")
            args.extend(states)
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id DESC LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._con.execute(sql, args).fetchall()
        return [_job(r) for r in rows]

    def update_job(self, job_id: int, **fields: Any) -> None:
        """Set fields; a new ``state`` is also appended to the event log (with ``error`` if given)."""
        bad = set(fields) - set(_JOB_FIELDS)
        if bad:
            raise KeyError(f"unknown job fields {sorted(bad)}")
        now = time.time()
        with self._lock:
            sets = ", ".join(f"{k}=?" for k in fields)
            self._con.execute(f"UPDATE jobs SET {sets} WHERE id=?", (*fields.values(), job_id))
            if "state" in fields:
                data = {"state": fields["state"]}
                if fields.get("error"):
                    data["error"] = fields["error"]
                self._event(job_id, "state", data, now)

    # events ---------------------------------------------------------------------------------------
    def add_event(self, job_id: int, type_: str, data: dict) -> int:
        with self._lock:
            return self._event(job_id, type_, data, time.time())

    def _event(self, job_id: int, type_: str, data: dict, ts: float) -> int:
        cur = self._con.execute("INSERT INTO events (job, ts, type, data) VALUES (?,?,?,?)",
                                (job_id, ts, type_, json.dumps(data)))
        return cur.lastrowid

    def events(self, after: int = 0, job: int | None = None, limit: int = 500) -> list[dict]:
        sql, args = "SELECT * FROM events WHERE id>?", [after]
        if job is not None:
            sql += " AND job=?"
            args.append(job)
        sql += " ORDER BY id LIMIT ?"
        args.append(limit)
        with self._lock:
            rows = self._con.execute(sql, args).fetchall()
        return [{"id": r["id"], "job": r["job"], "ts": r["ts"], "type": r["type"], "data": json.loads(r["data"])}
                for r in rows]

    def last_event(self, job_id: int, type_: str) -> dict | None:
        """The data of job ``job_id``'s newest event of ``type_`` (``None`` if it has none)."""
        with self._lock:
            row = self._con.execute("SELECT data FROM events WHERE job=? AND type=? ORDER BY id DESC LIMIT 1",
                                    (job_id, type_)).fetchone()
        return json.loads(row["data"]) if row else None

    def last_event_id(self) -> int:
        with self._lock:
            row = self._con.execute("SELECT MAX(id) FROM events").fetchone()
        return row[0] or 0


def _job(row: sqlite3.Row) -> dict:
    d = dict(row)
    d["params"] = json.loads(d["params"])
    d["argv"] = json.loads(d["argv"])
    return d
