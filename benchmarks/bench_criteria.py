"""Searched vs uniform vs criterion-pruned networks at equal MACs, trained from scratch (issue 12).

The protocol is pre-registered in BENCHMARKS.md ("Second attempt"): in the chosen regime, meta-train
a PruningNet (``--config``, quickstart by default, at the regime's width), run a Pareto search (the
search config of the same name), and at each budget (30% and 60% of the full network's MACs) export
the searched pick, prune random / l1 / bn / taylor / fpgm networks to the pick's MACs from one
full-width network (seed 0, the regime's recipe), and train all of them plus the uniform baseline
with seeds 0..S-1 (Scratch-E).
Where the Pareto front has no candidate under a budget, the searched network comes from MetaPruning's
constrained search at that budget (a deviation from the pre-registered text, made before any
network was trained; BENCHMARKS.md says so).

    .venv/bin/python benchmarks/bench_criteria.py --width-mult 0.125 --epochs 8 --train-images 3500 \\
        --seeds 5 --out /tmp/criteria --json benchmarks/results/criteria.json
    .venv/bin/python benchmarks/bench_criteria.py --config quickstart_glyphs --criteria none \\
        --width-mult 0.25 --epochs 4 --train-images 12400 --test-images 4000 --augment \\
        --warmup-epochs 1.0 --seeds 5 --fractions 0.35 --out /tmp/criteria-glyphs \\
        --json benchmarks/results/criteria_glyphs_0.35.json

Every step is a `metaprune` command, so this is also an end-to-end check of the CLI.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from pruningnet.cost import cost_model
from recipe_flags import add_recipe_flags, recipe_sets

REPO = Path(__file__).resolve().parents[1]
CRITERIA = "random,l1,bn,taylor,fpgm"


def mp(*args: str, check: bool = True) -> str | None:
    cmd = [sys.executable, "-m", "metaprune", *map(str, args)]
    print("$ metaprune " + " ".join(map(str, args)), flush=True)
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        if not check:
            print(r.stderr.strip(), flush=True)
            return None
        raise SystemExit(f"failed ({r.returncode}): {r.stderr[-3000:]}")
    return r.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="quickstart",
                    help="meta-training and search config by name (quickstart_glyphs: the glyphs regime)")
    ap.add_argument("--criteria", default=CRITERIA,
                    help="pruning criteria of the baselines (none: the searched and uniform networks only)")
    ap.add_argument("--width-mult", type=float, required=True)
    ap.add_argument("--epochs", type=int, required=True)
    ap.add_argument("--train-images", type=int, required=True)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--fractions", default="0.6,0.3",
                    help="budgets as fractions of the full MACs, largest first (see the constrained fallback)")
    ap.add_argument("--search", choices=("pareto", "constrained"), default="pareto",
                    help="pareto: one Pareto search, the pick its widest point under each budget (falls back to "
                         "constrained where none fits); constrained: MetaPruning's search at each budget itself "
                         "(each replaces the run's search)")
    add_recipe_flags(ap)
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    t0 = time.time()
    out = Path(args.out)
    run = out / "run"
    recipe = ["--recipe", "smoke", "--set", f"recipe.max_train_images={args.train_images}",
              "--set", f"recipe.max_test_images={args.test_images}", "--set", f"recipe.epochs={args.epochs}"]
    if args.lr is not None:
        recipe += ["--set", f"recipe.lr={args.lr}"]
    recipe += recipe_sets(args)
    if not (run / "pruningnet.pt").is_file():
        shutil.rmtree(run, ignore_errors=True)
        mp("train-pruningnet", "-c", args.config, "--run-dir", run, "--quiet",
           "--set", f"space.options.width_mult={args.width_mult}")
    if args.search == "pareto" and not (run / "search" / "front.json").is_file():
        mp("search", run, "-c", args.config, "--strategy", "pareto", "--quiet", "--overwrite")
    from metaprune.store.runs import open_run

    space = open_run(run).space
    cm = cost_model(space)
    full, least = int(cm.macs(space.max_channels())[0]), int(cm.macs(space.min_channels())[0])
    fractions = [float(f) for f in args.fractions.split(",")]
    low = [f for f in fractions if f * full < least]
    if low:  # before anything is searched or trained
        raise SystemExit(f"--fractions {','.join(map(str, low))}: below the narrowest network of the space "
                         f"({least:,} MACs, {least / full:.1%} of the full {full:,}); accepted: fractions >= "
                         f"{least / full:.3f}")
    report = {"regime": vars(args), "full_macs": full, "budgets": []}
    for frac in fractions:
        budget = int(frac * full)
        searched = out / f"searched-{frac:.2f}.json"
        how = "pareto"
        if args.search == "constrained" or mp("export", run, "--max-macs", budget, "-o", searched,
                                               check=False) is None:
            # the Pareto front does not reach this budget: MetaPruning's constrained search at it
            # (replaces the Pareto search, hence budgets largest first)
            how = "constrained"
            mp("search", run, "-c", args.config, "--strategy", "constrained", "--max-macs", budget, "--quiet",
               "--overwrite")
            mp("export", run, "--max-macs", budget, "-o", searched)
        specs = [searched]
        if args.criteria != "none":
            doc = json.loads(mp("baseline", run, "--criteria", args.criteria, "--like", searched, *recipe, "--json"))
            specs += [b["file"] for b in doc["baselines"]]
        mp("train", run, *sum((["--spec", s] for s in specs), []), *recipe, "--seeds", args.seeds,
           "--epochs", args.epochs, "--quiet")
        rows = json.loads((run / "train" / "results.json").read_text())["results"]
        # the run's results hold every budget trained in it: keep this pick, its uniform baseline and
        # the criteria networks paired with that baseline
        base = next(r["baseline"] for r in rows if r["name"] == f"searched-{searched.stem}")
        rows = [r for r in rows if base in (r["name"], r.get("baseline"))]
        shutil.copy(run / "train" / "results.json", out / f"results-{frac:.2f}.json")
        keep = ("name", "kind", "macs", "params", "proxy_top1", "test_top1", "test_top1_std",
                "test_top1_per_seed", "delta_top1", "delta_p", "channels")
        report["budgets"].append({"fraction": frac, "budget": budget, "search": how,
                                  "rows": [{k: r.get(k) for k in keep} for r in rows]})
        print(mp("report", run), flush=True)
    report["wall_s"] = round(time.time() - t0, 1)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    for b in report["budgets"]:
        print(f"\n{100 * b['fraction']:.0f}% of full MACs ({b['budget']:,}):")
        for r in b["rows"]:
            d = "" if r["delta_top1"] is None else f"  diff {100 * r['delta_top1']:+.2f}"
            p = "" if r["delta_p"] is None else f" (p {r['delta_p']:.3f})"
            print(f"  {r['kind']:9s} {r['name']:32s} {r['macs']:>10,d}  {100 * r['test_top1']:.2f} +- "
                  f"{100 * r['test_top1_std']:.2f}{d}{p}")


if __name__ == "__main__":
    main()
