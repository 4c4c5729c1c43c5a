"""Search against baseline: at fractions of the full model's MACs, the searched vector and the
uniform-width network of equal MACs, each trained from scratch with several seeds.

For every budget this runs the user's own commands on a copy of a meta-trained run (the source run
is only read): ``metaprune search --strategy constrained --max-macs B``, ``metaprune export
--max-macs B``, ``metaprune train --spec best.json --seeds S`` (which adds the uniform baseline of
the largest MACs not above the searched vector's), then prints mean and spread of test top-1.

Run by hand, e.g. on a quickstart run:
  .venv/bin/python benchmarks/bench_vs_baseline.py --run runs/quickstart-... --out /tmp/vsb \
      --fractions 0.3,0.6 --seeds 3 --full-reference --json /tmp/vsb.json
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import time
from pathlib import Path

from metaprune.cli.main import main as metaprune
from metaprune.store.runs import open_run
from metaprune.training.results import read_results
from pruningnet.cost import cost_model
from recipe_flags import add_recipe_flags, recipe_overrides, recipe_sets

REPO = Path(__file__).resolve().parents[1]
RUN_FILES = ("config.yaml", "space.json", "split.json", "status.json", "metrics.jsonl", "pruningnet.pt")


def derived_run(src: Path, dst: Path) -> Path:
    """A run directory holding ``src``'s trained PruningNet (hard links where possible), so a search
    and a training per budget never touch the source run's own results."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (src / name).is_file() and not (dst / name).exists():
            try:
                os.link(src / name, dst / name)
            except OSError:
                shutil.copy2(src / name, dst / name)
    return dst


def step(args: list[str]) -> None:
    print("$ metaprune " + " ".join(args), flush=True)
    code = metaprune(args)
    if code != 0:
        raise SystemExit(f"bench_vs_baseline: `metaprune {' '.join(args)}` exited {code}")


def proxy_scores(run: Path, results: list[dict], search_config: str) -> dict[str, dict]:
    """Proxy top-1 of every trained network, scored as the search scores its candidates, so the
    uniform baseline (and the full model) get one too.

    The scratch-trained uniform baseline keeps its continuous width, which is mostly between the
    space's choices, where the PruningNet never trained: its proxy is taken on the on-grid network
    nearest it within its MACs (``grid_uniform_for_budget``), and the row says so."""
    from metaprune.config import load_config
    from metaprune.search.config import SearchConfig
    from metaprune.search.evaluate import ProxyScorer, proxy_settings

    cfg = load_config(SearchConfig, search_config)
    r = open_run(run)
    scorer = ProxyScorer(run, proxy_settings(r, cfg, cfg.seed if cfg.seed is not None else r.config.seed))
    cm = cost_model(scorer.space)
    out = {}
    for row in results:
        ch, note = row["channels"], {"proxy_on_grid": True}
        if not cm.on_grid(ch):
            _, ch, macs = cm.grid_uniform_for_budget(row["macs"])
            note = {"proxy_on_grid": False, "proxy_scored_as": {"macs": macs, "channels": ch}}
        out[row["name"]] = {"proxy_top1": scorer(tuple(ch[u] for u in scorer.space.unit_names)), **note}
    return out


def summarize(results: list[dict], proxies: dict[str, dict]) -> dict:
    rows = {}
    for r in results:
        accs = r["test_top1_per_seed"]
        rows[r["kind"]] = {"name": r["name"], "macs": r["macs"], "params": r["params"],
                           **proxies[r["name"]], "test_top1_per_seed": accs,
                           "mean": round(statistics.mean(accs), 4),
                           "std": round(statistics.stdev(accs), 4) if len(accs) > 1 else 0.0,
                           "min": min(accs), "max": max(accs)}
    return rows


def train_full(src: Path, out: Path, args) -> Path:
    """The full-width network with the same recipe and seeds: the ceiling both arms are pruned from."""
    from metaprune.training.loop import scratch_data
    from metaprune.training.plan import Candidate, trial_configs
    from metaprune.training.recipe import load_train_config
    from metaprune.training.results import summarise, write_results
    from metaprune.training.runner import connect, run_trials
    from pruningnet.spec import make_spec

    run = derived_run(src, out)
    if (run / "train" / "results.json").is_file():
        return run
    r = open_run(run)
    space, cm = r.space, cost_model(r.space)
    ch = space.max_channels()
    cand = Candidate("full", "full", make_spec(space, ch), int(cm.macs(ch)[0]), int(cm.params(ch)[0]))
    overrides = {"recipe.max_train_images": args.train_images, "recipe.max_test_images": args.test_images}
    overrides.update(recipe_overrides(args))
    cfg = load_train_config("smoke", overrides, run_dir=run)
    trials = trial_configs([cand], cfg, "scratch-e", args.epochs, args.seeds, 1.0, 0.0)
    connect(None)
    outcomes = run_trials((run / "train" / "ray").resolve(), "full", trials,
                          scratch_data(r.load_data(), cfg.recipe, cfg.seed), cfg, 1.0, 0.0, verbose=0)
    write_results(run, summarise([cand.row()], outcomes, "scratch-e"))
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a meta-trained run (e.g. a quickstart run)")
    ap.add_argument("--out", required=True, help="directory for one derived run per budget")
    ap.add_argument("--fractions", default="0.3,0.6", help="budgets as fractions of the full model's MACs")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--search-config", default=str(REPO / "configs" / "search" / "quickstart.yaml"))
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-images", type=int, default=3500)
    ap.add_argument("--test-images", type=int, default=1000)
    add_recipe_flags(ap)
    ap.add_argument("--full-reference", action="store_true",
                    help="also train the full-width network with the same recipe and seeds")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.time()
    src = Path(args.run)
    space = open_run(src).space
    full = int(cost_model(space).macs(space.max_channels())[0])
    report = {"run": str(src), "full_macs": full, "seeds": args.seeds, "epochs": args.epochs,
              "train_images": args.train_images, "test_images": args.test_images,
              "warmup_epochs": args.warmup_epochs if args.warmup_epochs is not None else "the smoke recipe's",
              "augment": args.augment, "budgets": []}
    for frac in (float(f) for f in args.fractions.split(",")):
        budget = int(full * frac)
        run = derived_run(src, Path(args.out) / f"macs-{round(frac * 100)}pct")
        tb = time.time()
        if not (run / "search" / "front.json").is_file():
            step(["search", str(run), "-c", args.search_config, "--strategy", "constrained",
                  "--max-macs", str(budget), "--quiet"])
        best = run / "exports" / "best.json"
        step(["export", str(run), "--max-macs", str(budget), "-o", str(best)])
        if not (run / "train" / "results.json").is_file():
            step(["train", str(run), "--spec", str(best), "--recipe", "smoke", "--quiet",
                  "--seeds", str(args.seeds), "--epochs", str(args.epochs),
                  "--set", f"recipe.max_train_images={args.train_images}",
                  "--set", f"recipe.max_test_images={args.test_images}", *recipe_sets(args)])
        results = read_results(run)
        rows = summarize(results, proxy_scores(run, results, args.search_config))
        report["budgets"].append({"fraction": frac, "max_macs": budget, "wall_s": round(time.time() - tb, 1),
                                  **rows})
        print(json.dumps(report["budgets"][-1], indent=1), flush=True)
    if args.full_reference:
        run = train_full(src, Path(args.out) / "full", args)
        results = read_results(run)
        report["full"] = summarize(results, proxy_scores(run, results, args.search_config))["full"]
        print(json.dumps(report["full"], indent=1), flush=True)
    report["wall_s"] = round(time.time() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"total wall {report['wall_s']} s")


if __name__ == "__main__":
    main()
