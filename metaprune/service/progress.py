"""What a run directory says about itself: stage states and progress, read from its own files.

Every reader here is tolerant: a run being written by a job (files replaced atomically, but perhaps
not yet there), or a damaged file, gives a partial answer, never an exception; the service must keep
serving the other runs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

RUN_MARKERS = ("config.yaml", "space.json")
MAX_CURVE_POINTS = 400


def is_run(path: Path) -> bool:
    return path.is_dir() and all((path / m).is_file() for m in RUN_MARKERS)


def _json(path: Path, limit: int = 8 << 20) -> Any:
    try:
        if path.stat().st_size > limit:
            return None
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None


def tail_lines(path: Path, max_bytes: int = 16384) -> list[str]:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read().decode("utf-8", "replace")
    except OSError:
        return []
    lines = data.splitlines()
    return lines[1:] if size > max_bytes else lines


def meta_status(run: Path) -> dict:
    """Meta-training: state, step, total steps, last logged loss."""
    st = _json(run / "status.json")
    out: dict[str, Any] = {"state": "none"}
    if isinstance(st, dict):
        out.update({k: st[k] for k in ("state", "step", "total_steps", "wall_s", "loss_spikes") if k in st})
    for line in reversed(tail_lines(run / "metrics.jsonl")):
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and "loss" in rec:
            out["loss"] = rec["loss"]
            break
    if isinstance(out.get("step"), int) and isinstance(out.get("total_steps"), int) and out["total_steps"] > 0:
        out["fraction"] = min(1.0, out["step"] / out["total_steps"])
    return out


def metrics_curve(run: Path, max_points: int = MAX_CURVE_POINTS) -> list[dict]:
    """The meta-training curve (step, loss, train top-1), thinned to at most ``max_points``."""
    rows = []
    try:
        with open(run / "metrics.jsonl", encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if isinstance(rec, dict) and "step" in rec and "loss" in rec:
                    rows.append({k: rec.get(k) for k in ("step", "epoch", "loss", "train_top1", "lr")})
    except OSError:
        return []
    if len(rows) > max_points:
        stride = -(-len(rows) // max_points)
        rows = rows[::stride] + ([rows[-1]] if (len(rows) - 1) % stride else [])
    return rows


def search_status(run: Path) -> dict:
    """Search: strategy, generation, generations, candidates scored, best proxy top-1, finished."""
    d = run / "search"
    book = _json(d / "logbook.json")
    if not isinstance(book, dict):
        return {"state": "none"}
    out: dict[str, Any] = {"state": "done" if book.get("finished") else "partial",
                           "strategy": book.get("strategy"), "budgets": book.get("budgets")}
    log = book.get("logbook") or []
    if log and isinstance(log[-1], dict):
        last = log[-1]
        out.update(generation=last.get("gen", 0) + 1, evaluated=last.get("evaluated"),
                   best_top1=last.get("best_score"), best_id=last.get("best_id"),
                   front_size=last.get("front_size"))
    if isinstance(book.get("generations"), int):
        out["generations"] = book["generations"]
    else:  # a search written before logbook.json carried it: read the (larger) state file
        state = _json(d / "state.json", limit=64 << 20)
        try:
            out["generations"] = int(state["evolution"]["settings"]["generations"])
        except (TypeError, KeyError, ValueError):
            pass
    if out.get("generations") and out.get("generation"):
        out["fraction"] = min(1.0, out["generation"] / out["generations"])
    return out


def train_status(run: Path) -> dict:
    """Scratch training: planned trials, and whether results exist."""
    plan = _json(run / "train" / "plan.json")
    results = _json(run / "train" / "results.json")
    out: dict[str, Any] = {"state": "none"}
    if isinstance(plan, dict):
        out.update(state="planned", trials=len(plan.get("trials") or []),
                   networks=len(plan.get("candidates") or []))
    if results is not None:
        out["state"] = "done"
    return out


def run_summary(run: Path) -> dict:
    space = _json(run / "space.json")
    return {"name": run.name,
            "space": space.get("space") if isinstance(space, dict) else None,
            "options": space.get("options") if isinstance(space, dict) else None,
            "meta_training": meta_status(run), "search": search_status(run), "training": train_status(run),
            "has_pruningnet": (run / "pruningnet.pt").is_file()}


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def job_progress(kind: str, run: Path, since: float = 0.0) -> dict:
    """The progress a job of ``kind`` started at ``since`` has made, from its run's files (a search
    replacing an older one shows ``starting`` until its first generation is written)."""
    if kind == "meta-train":
        return {"stage": kind, **meta_status(run)}
    if kind == "search":
        if _mtime(run / "search" / "logbook.json") < since:
            return {"stage": kind, "state": "starting"}
        return {"stage": kind, **search_status(run)}
    return {"stage": kind, **train_status(run)}
