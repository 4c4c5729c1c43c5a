"""Gathering trial outcomes into one row per network in ``RUN/train/results.json``."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from pruningnet.errors import UserError

from ..store.fileio import read_json, write_json

FORMAT = "metaprune.train-results/1"


def results_path(run_dir: str | Path) -> Path:
    return Path(run_dir) / "train" / "results.json"


def summarise(candidates: list[dict], outcomes: list, budget: str) -> list[dict]:
    """One row per candidate (``Candidate.row()`` dicts): test top-1/top-5 mean and (population) std
    over the seeds that finished, each seed's top-1 in seed order, epochs, mean wall seconds per seed, and ``delta_top1`` = a searched
    spec's test top-1 minus its baseline's."""
    rows = []
    for cand in candidates:
        done = sorted((o for o in outcomes if o.trial["name"] == cand["name"] and o.error is None
                       and o.metrics.get("epoch") == o.trial["epochs"]), key=lambda o: int(o.trial["seed"]))
        failed = [o.error or "unfinished" for o in outcomes if o.trial["name"] == cand["name"] and o not in done]
        top1 = np.array([o.metrics["test_top1"] for o in done], dtype=float)
        top5 = np.array([o.metrics["test_top5"] for o in done], dtype=float)
        epochs = sorted({int(o.trial["epochs"]) for o in outcomes if o.trial["name"] == cand["name"]})

        def stat(a, f):
            return float(f(a)) if len(a) else None

        row = {k: cand[k] for k in ("name", "kind", "macs", "params", "latency_ms", "proxy_top1",
                                    "baseline", "ratio")}
        row.update(test_top1=stat(top1, np.mean), test_top1_std=stat(top1, np.std),
                   test_top5=stat(top5, np.mean), test_top5_std=stat(top5, np.std),
                   test_top1_per_seed=[float(v) for v in top1],
                   seeds=[int(o.trial["seed"]) for o in done], epochs=epochs[0] if len(epochs) == 1 else epochs,
                   budget=budget,
                   wall_s=stat(np.array([o.metrics["wall_s"] for o in done], dtype=float), np.mean),
                   failed=failed, space=cand["space"], options=cand["options"], channels=cand["channels"])
        rows.append(row)
    by_name = {r["name"]: r for r in rows}
    for r in rows:
        base = by_name.get(r["baseline"]) if r["baseline"] else None
        r["delta_top1"] = (r["test_top1"] - base["test_top1"]
                           if base and r["test_top1"] is not None and base["test_top1"] is not None else None)
        r["delta_p"] = paired_p(r, base) if base else None
    return rows


def paired_p(row: dict, base: dict) -> float | None:
    """Two-sided paired t-test p-value of ``row``'s test top-1 against ``base``'s over their common
    seeds; None with fewer than 2 common seeds or no spread in the differences."""
    from scipy import stats

    mine = dict(zip(row.get("seeds", []), row.get("test_top1_per_seed", [])))
    theirs = dict(zip(base.get("seeds", []), base.get("test_top1_per_seed", [])))
    common = sorted(set(mine) & set(theirs))
    d = np.array([mine[s] - theirs[s] for s in common])
    if len(d) < 2 or np.allclose(d, d[0]):
        return None
    return float(stats.ttest_1samp(d, 0.0).pvalue)  # the paired t-test: on the differences


def read_results(run_dir: str | Path) -> list[dict]:
    """The rows of ``RUN/train/results.json`` (empty if there are none)."""
    p = results_path(run_dir)
    if not p.is_file():
        return []
    doc = read_json(p, "scratch-training results", keys=("results",))
    if not isinstance(doc["results"], list):
        raise UserError(f"scratch-training results {str(p)!r} are damaged; rerun `metaprune train`")
    return doc["results"]


def write_results(run_dir: str | Path, rows: list[dict]) -> Path:
    """Merge ``rows`` into ``RUN/train/results.json`` by name (newer rows replace older ones)."""
    merged = {r["name"]: r for r in read_results(run_dir)}
    merged.update({r["name"]: r for r in rows})
    return write_json(results_path(run_dir), {"format": FORMAT, "results": list(merged.values())})
