"""One writer per run directory: an ``fcntl.flock`` on ``RUN/run.lock`` held for a job's life.

Every job that writes into a run (``train-pruningnet``, fresh and ``--resume``; ``search``;
``baseline``; ``export`` or ``latency build`` into the run; ``train``) holds it, so two of them never interleave config,
weights, metrics or results. The kernel releases the lock when its holder exits, however it dies
(``kill -9`` included): there is no stale lock to guess about. The file is never deleted (deleting a
lock file lets two processes lock two different files); while held it names the holder's job, pid
and host, and it is emptied on release. Readers (``evaluate``, ``pareto``, ``report``, the service)
take no lock: every file they read is replaced atomically (``pareto`` and ``report`` replace their
own plots and cache, which no job writes, atomically too).

Needs a filesystem with working ``flock`` (local disks do; some network filesystems do not).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path
from typing import Iterator

from pruningnet.errors import UserError

LOCK_FILE = "run.lock"


def _in_use(fd: int, run_dir: Path, job: str) -> UserError:
    """The refusal of a second writer, naming the holder the lock file records."""
    try:
        doc = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError, OSError):
        doc = {}
    doc = doc if isinstance(doc, dict) else {}
    held, pid, host = (repr(doc[k])[1:-1][:64] if isinstance(doc.get(k), str) else str(doc.get(k, "?"))[:64]
                       for k in ("job", "pid", "host"))
    who = f"(pid {pid} on {host})"
    what = (f"another {job} {who} is running on run {str(run_dir)!r}" if held == job else
            f"run {str(run_dir)!r} is in use by {held} {who}" if doc else
            f"run {str(run_dir)!r} is in use by another process")
    return UserError(f"{what}; one job writes to a run at a time: wait for it to finish, or stop it "
                     "(then resume it)")


@contextlib.contextmanager
def run_lock(run_dir: str | os.PathLike, job: str, create: bool = False) -> Iterator[Path]:
    """Hold the run's lock while the body runs; a second writer gets one :class:`UserError` line
    naming the holder. ``create``: make the run directory first (a new run); otherwise a missing
    directory is refused, and nothing is created but ``RUN/run.lock``."""
    import fcntl
    import stat

    d = Path(run_dir)
    if create:
        d.mkdir(parents=True, exist_ok=True)
    elif not d.is_dir():
        raise UserError(f"run directory {str(d)!r} does not exist; accepted: a metaprune run directory")
    lock = d / LOCK_FILE
    try:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno == errno.EROFS:  # a read-only filesystem has no writers to keep apart: the job's
            yield lock              # own first write is refused, naming the file it wanted
            return
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise UserError(f"run lock {str(lock)!r} is not a regular file; accepted: a file metaprune "
                            "creates (delete it)") from None
        raise OSError(e.errno, e.strerror, str(lock)) from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"run lock {str(lock)!r} is not a regular file; accepted: a file metaprune "
                            "creates (delete it)")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _in_use(fd, d, job) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"job": job, "pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        try:
            yield lock
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)  # released: the file stays, empty
    finally:
        os.close(fd)  # releases the flock
