"""``RUN/search/``: the search's files, written atomically after every generation, and its lock.

Files: ``state.json`` (what ``--resume`` continues from), ``candidates.json`` (every evaluated
vector), ``logbook.json``, ``front.json`` (``{"front": [{"id", "channels", "macs", "params",
["latency_ms"], "top1"[, "loss", "score"]}]}``; ``score`` at the top says what the search
maximised, ``top1`` or ``loss``), ``pareto.png`` and ``baselines.json`` (from ``metaprune pareto``),
and ``search.lock`` (flocked by the search running now, which it names).
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Sequence

from evolution.search import pareto_front

from pruningnet.errors import UserError

from ..store.fileio import atomic_write_many, dumps_json
from ..store.schemas import CANDIDATES_FILE, FRONT_FILE, SEARCH_STATE

STATE_FILE = "state.json"
LOCK_FILE = "search.lock"


def search_dir(run_path: Path) -> Path:
    return Path(run_path) / "search"


@contextlib.contextmanager
def search_lock(run_path: Path) -> Iterator[Path]:
    """Hold an exclusive ``fcntl.flock`` on ``RUN/search/search.lock`` while a search runs.

    The kernel releases the lock when its holder exits, however it dies (``kill -9`` included), so
    there is no stale lock to guess about; the file itself is never deleted (deleting a lock file
    lets two processes lock two different files). While held it names the holder's pid and host.
    A second search on the run is refused with :class:`UserError`. Needs a filesystem with working
    ``flock`` (local disks do; some network filesystems do not).
    """
    import fcntl

    d = search_dir(run_path)
    d.mkdir(parents=True, exist_ok=True)
    lock = d / LOCK_FILE
    try:
        fd = os.open(lock, os.O_CREAT | os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise UserError(f"search lock {str(lock)!r} is not a regular file; accepted: a file metaprune "
                            "creates (delete it)") from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
            except (ValueError, UnicodeDecodeError):
                holder = {}
            holder = holder if isinstance(holder, dict) else {}
            who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "another process"
            raise UserError(f"another search ({who}) is running on run {str(run_path)!r}; wait for it "
                            "to finish, or stop it and pass --resume") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname()}).encode(), 0)
        try:
            yield lock
        finally:
            os.ftruncate(fd, 0)  # released: the file stays, empty
    finally:
        os.close(fd)  # releases the flock


def read_state(run_path: Path) -> dict | None:
    """The saved search state (checked field by field: :data:`metaprune.store.schemas.SEARCH_STATE`), or
    None when the run has none."""
    f = search_dir(run_path) / STATE_FILE
    if not os.path.lexists(f):
        return None
    return SEARCH_STATE.read(f)


def candidate_record(c: dict, unit_names: Sequence[str]) -> dict:
    """An evolution candidate as the run stores it: channels by unit name, ``top1`` for the score (with
    the loss as the score: ``top1``, ``loss`` and ``score``, minus the loss)."""
    rec: dict[str, Any] = {"id": c["id"], "generation": c["generation"],
                           "channels": dict(zip(unit_names, c["channels"])),
                           "macs": c["macs"], "params": c["params"]}
    if "latency_ms" in c:
        rec["latency_ms"] = round(float(c["latency_ms"]), 4)
    if "flops_metapruning" in c:
        rec["flops_metapruning"] = int(c["flops_metapruning"])
    if "loss" in c:  # scored by the loss (search eval.score: loss): the score is minus it
        rec["top1"], rec["loss"], rec["score"] = c["top1"], round(float(c["loss"]), 6), c["score"]
    else:
        rec["top1"] = c["score"]
    return rec


def write_generation(run_path: Path, evo_state: dict, meta: dict, unit_names: Sequence[str]) -> None:
    """Write state, candidates, logbook and front all or nothing: a failed write (a full disk) leaves
    the previous generation's four files as they were."""
    d = search_dir(run_path)
    objectives = tuple(evo_state["settings"]["objectives"])
    records = [candidate_record(c, unit_names) for c in evo_state["candidates"]]
    front = [candidate_record(c, unit_names) for c in pareto_front(evo_state["candidates"], objectives)]
    head = {"strategy": meta["strategy"], "budgets": meta["budgets"], "seed": meta["seed"],
            "generation": evo_state["generation"], "generations": evo_state["settings"]["generations"],
            "finished": evo_state["finished"], "score": meta.get("proxy", {}).get("score") or "top1"}
    atomic_write_many({d / "candidates.json": dumps_json({**head, "candidates": records}),
                       d / "logbook.json": dumps_json({**head, "logbook": evo_state["logbook"]}),
                       d / "front.json": dumps_json({**head, "objectives": list(objectives), "front": front}),
                       d / STATE_FILE: dumps_json({"search": meta, "evolution": evo_state})})


def read_candidates(run_path: Path) -> dict:
    """``candidates.json`` of a run (checked: :data:`metaprune.store.schemas.CANDIDATES_FILE`);
    :class:`UserError` when the run has no search."""
    f = search_dir(run_path) / "candidates.json"
    if not os.path.lexists(f):
        raise UserError(f"run {str(run_path)!r} has no search yet; run `metaprune search {run_path}` first")
    return CANDIDATES_FILE.read(f)


def read_front(run_path: Path) -> dict:
    """``front.json`` of a run (checked: :data:`metaprune.store.schemas.FRONT_FILE`)."""
    f = search_dir(run_path) / "front.json"
    if not os.path.lexists(f):
        raise UserError(f"run {str(run_path)!r} has no search yet; run `metaprune search {run_path}` first")
    return FRONT_FILE.read(f)
