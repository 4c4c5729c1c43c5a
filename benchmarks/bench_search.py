"""Search benchmarks on one meta-trained run (run by hand; results go to RESULTS_search.md).

1. Candidates evaluated per minute with configs/search/smoke.yaml, locally.
2. The same search on 1 and on 2 Ray actors (local Ray), candidates per minute.
3. On the same PruningNet: one ``pareto`` search against ``constrained`` searches at 4 budgets
   with the same total number of evaluations; hypervolume of each over (proxy error, MACs / max
   MACs), reference point (1, 1).

    .venv/bin/python benchmarks/bench_search.py --run RUN [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from evolution import hypervolume  # noqa: E402
from evolution.pareto import nondominated_mask  # noqa: E402
from metaprune.config import load_config  # noqa: E402
from metaprune.store.runs import open_run  # noqa: E402
from metaprune.search.config import SearchConfig  # noqa: E402
from metaprune.search.runner import search_run  # noqa: E402
from metaprune.search.store import read_candidates  # noqa: E402
from pruningnet.cost import cost_model  # noqa: E402

SMOKE = REPO / "configs" / "search" / "smoke.yaml"


def fresh_copy(run: Path, root: Path, name: str) -> Path:
    dest = root / name
    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("search", "checkpoints"))
    return dest


def timed_search(run: Path, cfg: SearchConfig, budgets: dict, **kw) -> dict:
    t0 = time.perf_counter()
    out = search_run(run, cfg, budgets, **kw)
    wall = time.perf_counter() - t0
    return {"evaluated": out.evaluated, "search_s": round(out.seconds, 2), "wall_s": round(wall, 2),
            "per_minute": round(60 * out.evaluated / out.seconds, 1)}


def hv(cands: list[dict], max_macs: int) -> tuple[float, int]:
    pts = np.array([[1.0 - c["top1"], c["macs"] / max_macs] for c in cands])
    return hypervolume(pts, np.array([1.0, 1.0])), int(nondominated_mask(pts).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="a run with a trained PruningNet")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--parts", default="local,ray,hv", help="comma-separated subset of local,ray,hv")
    args = ap.parse_args()
    run = open_run(args.run)
    space = run.space
    cm = cost_model(space)
    lo, hi = int(cm.macs(space.min_channels())[0]), int(cm.macs(space.max_channels())[0])
    budget = {"macs": lo + (hi - lo) // 10}
    res: dict = {"run": str(args.run), "space": space.name, "macs_range": [lo, hi], "budget": budget}
    root = Path(tempfile.mkdtemp(prefix="bench_search_"))
    smoke = load_config(SearchConfig, SMOKE)
    try:
        parts = set(args.parts.split(","))
        if "local" in parts:
            res["local"] = timed_search(fresh_copy(args.run, root, "local"), smoke, budget)
            print("local", res["local"], flush=True)
        if "ray" in parts:
            import ray

            ray.init(num_cpus=max(2, os.cpu_count() or 1), include_dashboard=False, log_to_driver=False)
            for w in (1, 2):
                res[f"ray_{w}"] = timed_search(fresh_copy(args.run, root, f"ray{w}"), smoke, budget, workers=w)
                print(f"ray {w} workers", res[f"ray_{w}"], flush=True)
            ray.shutdown()
        if "hv" not in parts:
            return finish(args, res)

        # Equal evaluations: pareto 16 + 6 x 16 = 112; constrained 4 x (12 + 2 x 8) = 112.
        eval_cfg = {"bn_batches": 2, "max_images": 200, "batch_size": 100, "threads": 1}
        pareto = load_config(SearchConfig, None, {"strategy": "pareto", "population": 16, "mutations": 8,
                                                  "crossovers": 8, "generations": 7, "mutation_prob": 0.2,
                                                  "eval": eval_cfg})
        constrained = load_config(SearchConfig, None, {"population": 12, "parents": 4, "mutations": 4,
                                                       "crossovers": 4, "generations": 3,
                                                       "mutation_prob": 0.2, "eval": eval_cfg})
        p_run = fresh_copy(args.run, root, "pareto")
        res["pareto"] = timed_search(p_run, pareto, {})
        p_cands = read_candidates(p_run)["candidates"]
        res["pareto"]["hypervolume"], res["pareto"]["front_size"] = hv(p_cands, hi)
        print("pareto", res["pareto"], flush=True)
        c_cands, c_runs = [], []
        for i, frac in enumerate((0.05, 0.15, 0.3, 0.5)):
            b = {"macs": int(lo + (hi - lo) * frac)}
            r = fresh_copy(args.run, root, f"constrained{i}")
            c_runs.append({"budget_macs": b["macs"], **timed_search(r, constrained, b)})
            c_cands += read_candidates(r)["candidates"]
        h, n = hv(c_cands, hi)
        res["constrained_4_budgets"] = {"runs": c_runs, "evaluated": len(c_cands), "hypervolume": h,
                                        "front_size": n}
        print("constrained x4", res["constrained_4_budgets"], flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    finish(args, res)


def finish(args, res: dict) -> None:
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
