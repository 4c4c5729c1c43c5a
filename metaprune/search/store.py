"""``RUN/search/``: the search's files, written atomically after every generation, and its lock.

Files: ``state.json`` (what ``--resume`` continues from), ``candidates.json`` (every evaluated
vector), ``logbook.json``, ``front.json`` (``{"front": [{"id", "channels", "macs", "params",
["latency_ms"], "top1"}]}``), ``pareto.png`` and ``baselines.json`` (from ``metaprune pareto``),
and ``search.lock`` (the pid of the search running now).
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any, Iterator, Sequence

from evolution.search import pareto_front

from pruningnet.errors import UserError

from ..fileio import write_json

STATE_FILE = "state.json"
LOCK_FILE = "search.lock"


def search_dir(run_path: Path) -> Path:
    return Path(run_path) / "search"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def search_lock(run_path: Path) -> Iterator[Path]:
    """Hold ``RUN/search/search.lock`` while a search runs.

    A lock held by a live process on this host refuses with :class:`UserError`; the lock of a dead
    process (a search killed with ``kill -9``) is taken over.
    """
    d = search_dir(run_path)
    d.mkdir(parents=True, exist_ok=True)
    lock = d / LOCK_FILE
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(3):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                holder = json.loads(lock.read_text())
            except (OSError, json.JSONDecodeError):
                holder = {}
            pid, host = holder.get("pid"), holder.get("host")
            if isinstance(pid, int) and (host != me["host"] or _pid_alive(pid)):
                raise UserError(f"another search (pid {pid} on {host}) is running on run "
                                f"{str(run_path)!r}; wait for it to finish, or stop it and pass "
                                f"--resume") from None
            lock.unlink(missing_ok=True)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        break
    else:
        raise UserError(f"could not take the search lock {str(lock)!r}; remove it if no search runs")
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)


def read_state(run_path: Path) -> dict | None:
    """The saved search state, or None when the run has none."""
    f = search_dir(run_path) / STATE_FILE
    if not f.is_file():
        return None
    try:
        return json.loads(f.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"search state {str(f)!r} is not valid JSON ({e.msg}); start anew with "
                        "--overwrite") from None


def candidate_record(c: dict, unit_names: Sequence[str]) -> dict:
    """An evolution candidate as the run stores it: channels by unit name, ``top1`` for the score."""
    rec: dict[str, Any] = {"id": c["id"], "generation": c["generation"],
                           "channels": dict(zip(unit_names, c["channels"])),
                           "macs": c["macs"], "params": c["params"]}
    if "latency_ms" in c:
        rec["latency_ms"] = round(float(c["latency_ms"]), 4)
    rec["top1"] = c["score"]
    return rec


def write_generation(run_path: Path, evo_state: dict, meta: dict, unit_names: Sequence[str]) -> None:
    """Write state, candidates, logbook and front atomically (state last, so it never runs ahead)."""
    d = search_dir(run_path)
    objectives = tuple(evo_state["settings"]["objectives"])
    records = [candidate_record(c, unit_names) for c in evo_state["candidates"]]
    front = [candidate_record(c, unit_names) for c in pareto_front(evo_state["candidates"], objectives)]
    head = {"strategy": meta["strategy"], "budgets": meta["budgets"], "seed": meta["seed"],
            "generation": evo_state["generation"], "finished": evo_state["finished"]}
    write_json(d / "candidates.json", {**head, "candidates": records})
    write_json(d / "logbook.json", {**head, "logbook": evo_state["logbook"]})
    write_json(d / "front.json", {**head, "objectives": list(objectives), "front": front})
    write_json(d / STATE_FILE, {"search": meta, "evolution": evo_state})


def read_candidates(run_path: Path) -> dict:
    """``candidates.json`` of a run; :class:`UserError` when the run has no search."""
    f = search_dir(run_path) / "candidates.json"
    if not f.is_file():
        raise UserError(f"run {str(run_path)!r} has no search yet; run `metaprune search {run_path}` first")
    return json.loads(f.read_text())


def read_front(run_path: Path) -> dict:
    f = search_dir(run_path) / "front.json"
    if not f.is_file():
        raise UserError(f"run {str(run_path)!r} has no search yet; run `metaprune search {run_path}` first")
    return json.loads(f.read_text())
