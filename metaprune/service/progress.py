"""What a run directory says about itself: stage states and progress, read from its own files.

Every reader here is tolerant and suspicious: a run being written by a job (files replaced
atomically, but perhaps not yet there) gives a partial answer; a damaged file (a FIFO, a link, junk,
a huge file, a string where a number belongs) is never trusted, never blocks and never raises: the
run is shown with ``damaged``, a one-line reason, and the service keeps serving the other runs.
Every value passed on has its type checked here (numbers are finite numbers, strings are short,
names match a pattern): the page receives data, never markup.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from .files import Damaged, exists_regular, is_real_dir, parse_json, read_bytes, read_json, tail_bytes
from .validation import UNIT_RE

RUN_MARKERS = ("config.yaml", "space.json")
MAX_CURVE_POINTS = 400
MAX_METRICS_BYTES = 32 << 20  # the curve is read from at most the last 32 MB of metrics.jsonl
MAX_STRING = 200
MAX_CANDIDATES = 20_000
MAX_UNITS = 512
META_STATES = ("running", "done", "interrupted", "failed")
STRATEGIES = ("constrained", "pareto")
STALE_S = 600  # a "running" status.json untouched this long, with no job of this server on it


def is_run(path: Path) -> bool:
    """A run directory: a real directory (not a link) with its two marker files."""
    return is_real_dir(path.parent, path.name) and all(exists_regular(path, m) for m in RUN_MARKERS)


def looks_like_run(path: Path) -> bool:
    """A real directory holding the two marker names, whatever they are (a damaged run is listed,
    with the reason, rather than hidden)."""
    import os

    return is_real_dir(path.parent, path.name) and all(os.path.lexists(path / m) for m in RUN_MARKERS)


# ---- value checks ----------------------------------------------------------------------------------
def num(v: Any) -> float | int | None:
    """``v`` if it is a finite real number (not a bool), else ``None``."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, int) and abs(v) > 2**53:
        return None
    return v


def count(v: Any) -> int | None:
    """``v`` if it is an integer in [0, 2**53], else ``None``."""
    return v if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 2**53 else None


def text(v: Any, limit: int = MAX_STRING) -> str | None:
    """``v`` if it is a string, cut to ``limit`` characters and to its first line; else ``None``."""
    if not isinstance(v, str):
        return None
    line = v.splitlines()[0] if v else ""
    return line[:limit]


def choice(v: Any, allowed: tuple[str, ...]) -> str | None:
    return v if isinstance(v, str) and v in allowed else None


def plain(v: Any, depth: int = 0, budget: list[int] | None = None) -> Any:
    """A copy of JSON-ish ``v`` with finite numbers, short strings and at most a few hundred items."""
    budget = budget if budget is not None else [2000]
    budget[0] -= 1
    if budget[0] < 0 or depth > 6:
        return None
    if v is None or isinstance(v, bool):
        return v
    if isinstance(v, (int, float)):
        return num(v)
    if isinstance(v, str):
        return text(v)
    if isinstance(v, (list, tuple)):
        return [plain(x, depth + 1, budget) for x in list(v)[:256]]
    if isinstance(v, dict):
        return {k[:80]: plain(x, depth + 1, budget) for k, x in list(v.items())[:256] if isinstance(k, str)}
    return None


def _load(run: Path, rel: str, damaged: list[str], limit: int | None = None) -> Any:
    try:
        return read_json(run, rel) if limit is None else read_json(run, rel, limit)
    except Damaged as e:
        damaged.append(str(e))
        return None


def _first_damage(damaged: list[str]) -> str | None:
    return damaged[0][:300] if damaged else None


# ---- meta-training ---------------------------------------------------------------------------------
def _tail(folder: Path, name: str, max_bytes: int) -> list[str]:
    """The whole last lines of ``folder/name`` within ``max_bytes`` (``[]`` when missing; Damaged)."""
    got = tail_bytes(folder, name, max_bytes)
    if got is None:
        return []
    data, cut = got
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[1:] if cut else lines


def _metrics_tail(run: Path, damaged: list[str], max_bytes: int = 65536) -> list[str]:
    try:
        return _tail(run, "metrics.jsonl", max_bytes)
    except Damaged as e:
        damaged.append(str(e))
        return []


def _record(line: str) -> dict | None:
    try:
        rec = parse_json(line.encode(), "metrics.jsonl")
    except Damaged:
        return None
    return rec if isinstance(rec, dict) else None


def meta_status(run: Path, damaged: list[str] | None = None) -> dict:
    """Meta-training: state, step, total steps, last logged loss, fraction done. The step is the
    larger of ``status.json``'s (written at start and end) and the last logged one in
    ``metrics.jsonl`` (every ``log_every_steps``), so a running job shows its real step."""
    damaged = damaged if damaged is not None else []
    st = _load(run, "status.json", damaged)
    out: dict[str, Any] = {"state": "none"}
    if st is not None and not isinstance(st, dict):
        damaged.append("status.json is not a JSON object")
    if isinstance(st, dict):
        state = choice(st.get("state"), META_STATES)
        if state is None:
            damaged.append(f"status.json has state {text(repr(st.get('state')), 60)}; accepted: "
                           f"{', '.join(META_STATES)}")
        out["state"] = state or "damaged"
        for k, f in (("step", count), ("total_steps", count), ("wall_s", num), ("loss_spikes", count)):
            v = f(st.get(k))
            if v is not None:
                out[k] = v
    for line in reversed(_metrics_tail(run, damaged)):
        rec = _record(line)
        if rec is None:
            continue
        step, loss = count(rec.get("step")), num(rec.get("loss"))
        if step is None and loss is None:
            continue
        if step is not None and step > out.get("step", -1):
            out["step"] = step
        if loss is not None:
            out["loss"] = loss
        break
    if out.get("total_steps") and out.get("step") is not None:
        out["step"] = min(out["step"], out["total_steps"])
        out["fraction"] = min(1.0, out["step"] / out["total_steps"])
    return out


def metrics_curve(run: Path, max_points: int = MAX_CURVE_POINTS, damaged: list[str] | None = None) -> list[dict]:
    """The meta-training curve (step, loss, train top-1), thinned to at most ``max_points``; from the
    last 32 MB of ``metrics.jsonl``; records with a non-number are left out."""
    damaged = damaged if damaged is not None else []
    rows = []
    for line in _metrics_tail(run, damaged, MAX_METRICS_BYTES):
        rec = _record(line)
        if rec is None:
            continue
        step, loss = count(rec.get("step")), num(rec.get("loss"))
        if step is None or loss is None:
            continue
        rows.append({"step": step, "epoch": count(rec.get("epoch")), "loss": loss,
                     "train_top1": num(rec.get("train_top1")), "lr": num(rec.get("lr"))})
    if len(rows) > max_points:
        stride = -(-len(rows) // max_points)
        rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
    return rows


# ---- search ----------------------------------------------------------------------------------------
def budgets(v: Any) -> dict:
    """A budgets mapping with only known keys and finite positive numbers."""
    if not isinstance(v, dict):
        return {}
    return {k: v[k] for k in ("macs", "params", "latency_ms", "flops_metapruning")
            if num(v.get(k)) is not None and v[k] > 0}


def search_status(run: Path, damaged: list[str] | None = None) -> dict:
    """Search: strategy, generation, generations, candidates scored, best proxy top-1, finished."""
    damaged = damaged if damaged is not None else []
    book = _load(run, "search/logbook.json", damaged)
    if not isinstance(book, dict):
        if book is not None:
            damaged.append("search/logbook.json is not a JSON object")
        return {"state": "none"}
    out: dict[str, Any] = {"state": "done" if book.get("finished") is True else "partial",
                           "strategy": choice(book.get("strategy"), STRATEGIES),
                           "budgets": budgets(book.get("budgets"))}
    log = book.get("logbook") if isinstance(book.get("logbook"), list) else []
    if log and isinstance(log[-1], dict):
        last = log[-1]
        gen = count(last.get("gen"))
        best = num(last.get("best_score"))
        by_loss = book.get("score") == "loss"  # the score is minus the loss (search eval.score: loss)
        out.update(generation=gen + 1 if gen is not None else None, evaluated=count(last.get("evaluated")),
                   best_top1=None if by_loss else best, best_id=count(last.get("best_id")),
                   front_size=count(last.get("front_size")))
        if by_loss and best is not None:
            out["best_loss"] = -best
    if count(book.get("generations")):
        out["generations"] = book["generations"]
    if out.get("generations") and out.get("generation"):
        out["fraction"] = min(1.0, out["generation"] / out["generations"])
    return out


def clean_candidate(c: Any) -> dict | None:
    """A candidate record with checked types (``None`` if it is not one): id, generation, channels
    (unit name -> integer), MACs, params, top-1, latency."""
    if not isinstance(c, dict):
        return None
    cid, macs, params, top1 = count(c.get("id")), count(c.get("macs")), count(c.get("params")), num(c.get("top1"))
    ch = c.get("channels")
    if None in (cid, macs, params, top1) or not isinstance(ch, dict) or not 0 < len(ch) <= MAX_UNITS:
        return None
    if not all(isinstance(k, str) and UNIT_RE.match(k) and count(v) for k, v in ch.items()):
        return None
    out = {"id": cid, "generation": count(c.get("generation")), "channels": dict(ch), "macs": macs,
           "params": params, "top1": top1}
    for k, f in (("latency_ms", num), ("flops_metapruning", count)):
        if f(c.get(k)) is not None:
            out[k] = c[k]
    return out


def clean_candidates(items: Any) -> tuple[list[dict], int]:
    """The well-formed candidates of a list, and how many were left out."""
    if not isinstance(items, list):
        return [], 0
    out = [x for x in (clean_candidate(c) for c in items[:MAX_CANDIDATES]) if x is not None]
    return out, len(items) - len(out)


def read_search(run: Path) -> tuple[dict, list[dict], int]:
    """The front document, every candidate and the number of damaged records left out;
    :class:`Damaged` (one line) when there is no usable search."""
    try:
        front = read_json(run, "search/front.json")
        cands = read_json(run, "search/candidates.json")
    except Damaged:
        raise
    if front is None or cands is None:
        raise FileNotFoundError("no search")
    if not isinstance(front, dict) or not isinstance(front.get("front"), list):
        raise Damaged("search/front.json is damaged (no front list)")
    if not isinstance(cands, dict) or not isinstance(cands.get("candidates"), list):
        raise Damaged("search/candidates.json is damaged (no candidates list)")
    f, bad_f = clean_candidates(front["front"])
    c, bad_c = clean_candidates(cands["candidates"])
    objectives = front.get("objectives")
    doc = {"strategy": choice(front.get("strategy"), STRATEGIES), "budgets": budgets(front.get("budgets")),
           "objectives": [o for o in objectives if isinstance(o, str) and o in ("macs", "params", "latency_ms",
                                                                               "flops_metapruning")]
           if isinstance(objectives, list) else [],
           "generation": count(front.get("generation")), "generations": count(front.get("generations")),
           "finished": front.get("finished") is True, "seed": count(cands.get("seed")), "front": f}
    return doc, c, bad_f + bad_c


# ---- scratch training ------------------------------------------------------------------------------
def train_status(run: Path, damaged: list[str] | None = None) -> dict:
    """Scratch training: planned trials, and whether results exist."""
    damaged = damaged if damaged is not None else []
    plan = _load(run, "train/plan.json", damaged)
    has_results = exists_regular(run, "train/results.json")
    out: dict[str, Any] = {"state": "none"}
    if isinstance(plan, dict):
        trials, cands = plan.get("trials"), plan.get("candidates")
        out.update(state="planned", trials=len(trials) if isinstance(trials, list) else 0,
                   networks=len(cands) if isinstance(cands, list) else 0)
    if has_results:
        out["state"] = "done"
    return out


def clean_result(row: Any) -> dict | None:
    """A scratch-training result row: string fields short, numbers finite, nested values dropped."""
    if not isinstance(row, dict):
        return None
    out = {}
    for k, v in list(row.items())[:64]:
        if not isinstance(k, str) or len(k) > 60:
            continue
        if isinstance(v, str):
            out[k] = text(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = num(v)
        elif v is None or isinstance(v, bool):
            out[k] = v
    return out


# ---- a whole run -----------------------------------------------------------------------------------
def run_summary(run: Path) -> dict:
    """Name, space, stage states; ``damaged``: the first problem found in its files (or ``None``)."""
    damaged: list[str] = []
    space = _load(run, "space.json", damaged)
    if space is not None and not isinstance(space, dict):
        damaged.append("space.json is not a JSON object")
    space = space if isinstance(space, dict) else {}
    out = {"name": run.name, "space": text(space.get("space"), 80), "options": plain(space.get("options")),
           "meta_training": meta_status(run, damaged), "search": search_status(run, damaged),
           "training": train_status(run, damaged), "has_pruningnet": exists_regular(run, "pruningnet.pt")}
    out["damaged"] = _first_damage(damaged)
    return out


def damaged_summary(run: Path, reason: str) -> dict:
    """What the runs list shows for a run it cannot read."""
    return {"name": run.name, "space": None, "options": None, "meta_training": {"state": "none"},
            "search": {"state": "none"}, "training": {"state": "none"}, "has_pruningnet": False,
            "damaged": reason[:300]}


def settle_meta_state(summary: dict, run: Path, active_job: dict | None, last_job: dict | None,
                      now: float | None = None) -> None:
    """``status.json`` says ``running`` until the next start or end; a job that was cancelled or
    killed never rewrites it. Show what happened instead: the state of this server's last job on the
    run when it ended after the file was written, else ``stopped`` when the file is stale."""
    m = summary.get("meta_training") or {}
    if m.get("state") != "running" or (active_job is not None and active_job.get("kind") == "meta-train"):
        return
    mtime = _newest_mtime(run, ("status.json", "metrics.jsonl"))
    holder = lock_holder(run)
    if last_job is not None and last_job.get("kind") == "meta-train" and last_job.get("ended") \
            and last_job["state"] in ("cancelled", "interrupted", "failed") and last_job["ended"] >= mtime - 1:
        m["state"] = last_job["state"]
        m["note"] = f"job {last_job['id']} {last_job['state']}; resume it to continue"
    elif holder is True:
        return  # a writer (a CLI run) holds the run: it is running
    elif holder is False or (now or time.time()) - mtime > STALE_S:
        m["state"] = "stopped"
        m["note"] = "status.json says running, but no process is meta-training this run; resume it to continue"


def lock_holder(run: Path) -> bool | None:
    """Whether a live process holds the run's writer lock (``RUN/run.lock`` names its pid and host
    while held and is emptied on release); ``None`` when the run has no lock file (older runs) or it
    names another host."""
    import os
    import socket

    try:
        data = read_bytes(run, "run.lock", 4096)
        if data is None:
            return None
        if not data.strip():
            return False  # released
        doc = parse_json(data, "run.lock")
    except Damaged:
        return None
    if not isinstance(doc, dict):
        return None
    pid, host = doc.get("pid"), doc.get("host")
    if host != socket.gethostname() or not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None if host != socket.gethostname() else False
    try:
        return b"metaprune" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()


def _newest_mtime(run: Path, names: tuple[str, ...]) -> float:
    import os

    best = 0.0
    for n in names:
        try:
            best = max(best, os.lstat(run / n).st_mtime)
        except OSError:
            pass
    return best


def tail_lines(path: Path, max_bytes: int = 16384) -> list[str]:
    """The last lines of a service log (at most ``max_bytes``; ``[]`` when missing or damaged)."""
    try:
        return _tail(path.parent, path.name, max_bytes)
    except Damaged:
        return []


def job_progress(kind: str, run: Path, since: float = 0.0) -> dict:
    """The progress a job of ``kind`` started at ``since`` has made, from its run's files (a search
    replacing an older one shows ``starting`` until its first generation is written)."""
    if kind == "meta-train":
        return {"stage": kind, **meta_status(run)}
    if kind == "search":
        if _newest_mtime(run, ("search/logbook.json",)) < since:
            return {"stage": kind, "state": "starting"}
        return {"stage": kind, **search_status(run)}
    return {"stage": kind, **train_status(run)}


def json_size(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":")))
