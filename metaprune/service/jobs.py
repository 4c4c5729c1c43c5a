"""Jobs: the existing ``metaprune`` commands run as subprocesses, a bounded number at a time.

A job is a row in the service database and one ``python -m metaprune ...`` process in its own
process group (``start_new_session``): a crash or an out-of-memory kill of the job cannot take the
server down, and cancelling kills the whole group (Ray workers a training job started included).

Cores are never oversubscribed: with ``--jobs N`` on a machine of C cores each job may use
``max(1, C // N)`` torch threads (``METAPRUNE_MAX_THREADS``, which every stage honours, and
``OMP_NUM_THREADS``), and at most N jobs run at once; the rest wait in ``queued``.

Synchronous work that starts a process inside a request (an ONNX or TorchScript export, scoring the
uniform baselines) takes one of the same slots (:meth:`JobManager.reserve`), so requests cannot be
used to start more processes than ``--jobs``; it also needs its run free of jobs, and a job queued
for the run meanwhile waits for it.

A server that goes away (restart, ``kill -9``) leaves its running jobs ``interrupted`` on the next
start (their process groups are stopped first if they survived); ``resume`` starts a new job with the
stage's ``--resume``.
"""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator

from ..process.threads import available_cores
from .db import Database, RunBusy
from .files import Damaged, is_real_dir, open_private
from .progress import job_progress, tail_lines

LOG_DIR = ".service-logs"
KINDS = ("meta-train", "search", "train")
ERROR_PREFIX = "metaprune: error: "
INTERRUPTED = "the server stopped while this job ran; resume it to continue"


class SlotsBusy(Exception):
    """Every job slot is taken (``max_jobs``: how many there are)."""

    def __init__(self, max_jobs: int):
        super().__init__(f"all {max_jobs} job slot(s) are busy")
        self.max_jobs = max_jobs


def resume_argv(kind: str, run_path: Path) -> list[str]:
    if kind == "meta-train":
        return ["train-pruningnet", "--resume", str(run_path), "--quiet"]
    if kind == "search":
        return ["search", str(run_path), "--resume", "--quiet"]
    return ["train", str(run_path), "--resume", "--quiet"]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_ours(pid: int) -> bool:
    """The process ``pid`` runs metaprune (a pid reused by another program is left alone)."""
    try:
        return b"metaprune" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _kill_group(pid: int, grace_s: float = 5.0) -> None:
    """SIGTERM the process group led by ``pid``, SIGKILL what is left after ``grace_s``."""
    try:
        os.killpg(pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except (ProcessLookupError, PermissionError):
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def last_error(log: Path) -> str | None:
    """The job's one-line error: the last ``metaprune: error:`` line of its log, else its last line."""
    lines = [ln.strip() for ln in tail_lines(log, 65536) if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith(ERROR_PREFIX):
            return ln[len(ERROR_PREFIX):][:500]
    return lines[-1][:500] if lines else None


@dataclass
class _Running:
    """What the manager holds for a job while its process runs."""

    proc: subprocess.Popen
    run: str
    kind: str
    slot: int
    log: IO[bytes]
    started: float
    fraction0: float | None  # progress when it started (None: a resumed job, taken from its first report)
    last_progress: dict = field(default_factory=dict)
    cancelling: bool = False


class JobManager:
    """Starts queued jobs when a slot is free, watches running ones, records their progress."""

    def __init__(self, runs_dir: Path, db: Database, max_jobs: int, cores: int | None = None,
                 poll_s: float = 0.5, gpus: int = 0):
        self.runs_dir = runs_dir
        self.db = db
        self.cores = cores or available_cores()
        self.max_jobs = max(1, min(int(max_jobs), self.cores))  # more jobs than cores would oversubscribe
        self.threads = max(1, self.cores // self.max_jobs)
        self.poll_s = poll_s
        self.gpus = gpus  # > 0: job slot i sees only GPU i % gpus (CUDA_VISIBLE_DEVICES)
        self.log_dir = runs_dir / LOG_DIR
        self._running: dict[int, _Running] = {}
        self._sync: dict[int, tuple[str, bool]] = {}  # reservation -> (run, takes a slot)
        self._next_sync = 0
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._launching = False  # until start(): jobs are queued, no process is started

    # lifecycle --------------------------------------------------------------------------------------
    def recover(self) -> list[int]:
        """Mark jobs a previous server left running as ``interrupted`` (stopping survivors first)."""
        out = []
        for job in self.db.jobs(states=("running",), limit=10_000):
            pid = job.get("pid")
            if pid and _alive(pid) and _is_ours(pid):
                _kill_group(pid)
            self.db.update_job(job["id"], state="interrupted", ended=time.time(), error=INTERRUPTED)
            out.append(job["id"])
        return out

    def start(self) -> None:
        self.recover()
        self._stop.clear()
        self._launching = True
        self._thread = threading.Thread(target=self._loop, name="metaprune-jobs", daemon=True)
        self._thread.start()

    def stop(self, kill: bool = True) -> None:
        """Stop watching; with ``kill``, stop running jobs too (they become ``interrupted``)."""
        self._stop.set()
        self._launching = False
        if self._thread is not None:
            self._thread.join(timeout=10)
        if kill:
            with self._lock:
                items = list(self._running.items())
            for job_id, r in items:
                _kill_group(r.proc.pid)
                r.proc.wait()
                self.db.update_job(job_id, state="interrupted", ended=time.time(), exit_code=r.proc.returncode,
                                   error=INTERRUPTED)
                self._close(job_id)

    # requests ---------------------------------------------------------------------------------------
    def submit(self, kind: str, run: str, params: dict, argv: list[str], resumes: int | None = None,
               new_run: bool = False) -> dict:
        """Queue a job; :class:`~.db.RunBusy` if the run has an active job (one writer per
        run: the database checks and inserts atomically)."""
        assert kind in KINDS
        job = self.db.create_job(kind, run, params, argv, resumes=resumes, new_run=new_run)
        self.tick()
        return self.db.job(job["id"])

    @contextlib.contextmanager
    def reserve(self, run: str, slot: bool = True) -> Iterator[None]:
        """Hold ``run`` (and, with ``slot``, one job slot) for work done inside a request (an export,
        scoring baselines: each writes its own files); :class:`~.db.RunBusy` if the run has an active
        job, :class:`SlotsBusy` if every slot is taken. A job of the run queued meanwhile starts when
        the hold ends."""
        with self._lock:
            active = self.active_for_run(run)
            if active is not None:
                raise RunBusy(active)
            if slot and len(self._running) + sum(s for _, s in self._sync.values()) >= self.max_jobs:
                raise SlotsBusy(self.max_jobs)
            self._next_sync += 1
            key = self._next_sync
            self._sync[key] = (run, slot)
        try:
            yield
        finally:
            with self._lock:
                self._sync.pop(key, None)

    def cancel(self, job_id: int) -> dict:
        job = self.db.job(job_id)
        if job is None or job["state"] not in ("queued", "running"):
            return job
        with self._lock:
            r = self._running.get(job_id)
            if r is None:
                self.db.update_job(job_id, state="cancelled", ended=time.time())
                return self.db.job(job_id)
            r.cancelling = True
        _kill_group(r.proc.pid)
        r.proc.wait()
        self.tick()
        return self.db.job(job_id)

    def active_for_run(self, run: str) -> dict | None:
        jobs = self.db.jobs(run=run, states=("queued", "running"), limit=1)
        return jobs[0] if jobs else None

    # the loop ---------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            try:
                self.tick()
            except Exception as e:  # noqa: BLE001 - the watcher must outlive one bad tick
                print(f"metaprune serve: job watcher: {type(e).__name__}: {e}", file=sys.stderr)

    def tick(self) -> None:
        """Reap finished jobs, record progress of running ones, start queued ones into free slots."""
        with self._lock:
            for job_id, r in list(self._running.items()):
                rc = r.proc.poll()
                self._record_progress(job_id, r, final=rc is not None)
                if rc is None:
                    continue
                if r.cancelling:
                    self.db.update_job(job_id, state="cancelled", ended=time.time(), exit_code=rc)
                elif rc == 0:
                    self.db.update_job(job_id, state="done", ended=time.time(), exit_code=0)
                else:
                    err = last_error(self.log_path(job_id)) or f"exited with code {rc}"
                    if rc < 0:
                        err = f"killed by signal {-rc} ({err})"
                    self.db.update_job(job_id, state="failed", ended=time.time(), exit_code=rc, error=err)
                self._close(job_id)
            free = self.max_jobs - len(self._running) - sum(s for _, s in self._sync.values())
            if free > 0 and self._launching:
                for job in reversed(self.db.jobs(states=("queued",), limit=10_000)):
                    if free == 0:
                        break
                    if any(r.run == job["run"] for r in self._running.values()) or \
                            any(r == job["run"] for r, _ in self._sync.values()):
                        continue  # one writer per run: the job waits for the run's current work
                    self._launch(job)
                    free -= 1

    def log_path(self, job_id: int) -> Path:
        return self.log_dir / f"job-{job_id}.log"

    def _launch(self, job: dict) -> None:
        env = dict(os.environ)
        slot = min(set(range(self.max_jobs)) - {r.slot for r in self._running.values()})
        if self.gpus > 0:
            env["CUDA_VISIBLE_DEVICES"] = str(slot % self.gpus)
        env.update(METAPRUNE_MAX_THREADS=str(self.threads), OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads), RAY_USAGE_STATS_ENABLED="0", PYTHONUNBUFFERED="1")
        try:
            log = self._open_log(job["id"])
        except (OSError, Damaged) as e:
            self.db.update_job(job["id"], state="failed", ended=time.time(), error=f"cannot open its log: {e}")
            return
        try:
            proc = subprocess.Popen([sys.executable, "-m", "metaprune", *job["argv"]], stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(self.runs_dir),
                                    start_new_session=True)
        except OSError as e:
            log.close()
            self.db.update_job(job["id"], state="failed", ended=time.time(), error=f"cannot start: {e}")
            return
        now = time.time()
        self._running[job["id"]] = _Running(proc, job["run"], job["kind"], slot, log, now,
                                            None if job.get("resumes") else 0.0)
        self.db.update_job(job["id"], state="running", started=now, pid=proc.pid, threads=self.threads)

    def _open_log(self, job_id: int) -> IO[bytes]:
        """The job's log, appended to; never through a link (someone with write access to the runs
        directory could point it at a file of the server's user)."""
        if not is_real_dir(self.runs_dir, LOG_DIR):
            if os.path.lexists(self.log_dir):
                raise Damaged(f"{self.log_dir} is not a directory (a link?); remove it")
            self.log_dir.mkdir(mode=0o700)
        fd = open_private(self.log_path(job_id), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        return os.fdopen(fd, "ab")

    def _close(self, job_id: int) -> None:
        r = self._running.pop(job_id, None)
        if r is not None:
            r.log.close()

    def _record_progress(self, job_id: int, r: _Running, final: bool = False) -> None:
        prog = job_progress(r.kind, self.runs_dir / r.run, since=r.started)
        frac = prog.get("fraction")
        if frac is not None:
            if r.fraction0 is None:
                r.fraction0 = frac
            elapsed = time.time() - r.started
            rate = (frac - r.fraction0) / elapsed if elapsed > 0 else 0
            if rate > 0 and not final:
                prog["eta_s"] = round((1 - frac) / rate, 1)
        key = {k: v for k, v in prog.items() if k != "eta_s"}
        if key != r.last_progress:
            r.last_progress = key
            self.db.add_event(job_id, "progress", prog)
