"""Does width matter in a regime? The pre-registered check of BENCHMARKS.md ("the regime rule").

For one candidate regime (a space width and a scratch recipe), scratch-train only the full-width
network and the uniform network at 30% of its MACs, with several seeds, and apply the rule: the
full network's mean test top-1 must be at least 3 points above the uniform one's, and the larger of
the two seed standard deviations at most a third of that gap. No PruningNet and no search result
is involved, so the regime is chosen before any search is seen.

Run by hand, e.g. candidate A::

    .venv/bin/python benchmarks/bench_regime.py --name A --width-mult 0.25 --epochs 4 \\
        --train-images 3500 --seeds 3 --out /tmp/regime --json benchmarks/results/regime_A.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from metaprune.cli.main import main as metaprune
from metaprune.store.runs import open_run
from pruningnet.cost import cost_model
from recipe_flags import add_recipe_flags, recipe_overrides

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True)
    ap.add_argument("--config", default="quickstart",
                    help="meta-training config whose space and data the regime uses (quickstart_glyphs: glyphs)")
    ap.add_argument("--width-mult", type=float, required=True)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--train-images", type=int, default=3500)
    ap.add_argument("--test-images", type=int, default=1000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--fraction", type=float, default=0.3)
    ap.add_argument("--lr", type=float, default=None, help="override the smoke recipe's lr")
    add_recipe_flags(ap)
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from metaprune.training.loop import scratch_data
    from metaprune.training.plan import Candidate, trial_configs
    from metaprune.training.recipe import load_train_config
    from metaprune.training.runner import connect, run_trials
    from pruningnet.spec import make_spec

    t0 = time.time()
    run_dir = Path(args.out) / f"regime-{args.name}"
    if not (run_dir / "config.yaml").is_file():  # a run only for its space, split and data
        code = metaprune(["train-pruningnet", "-c", args.config, "--run-dir", str(run_dir), "--quiet",
                          "--set", f"space.options.width_mult={args.width_mult}", "--set", "train.max_steps=1"])
        if code != 0:
            raise SystemExit(f"creating {run_dir} exited {code}")
    run = open_run(run_dir)
    space, cm = run.space, cost_model(run.space)
    full_ch = space.max_channels()
    full_macs = int(cm.macs(full_ch)[0])
    ratio, uni_ch, uni_macs = cm.uniform_for_budget(int(full_macs * args.fraction))
    cands = [Candidate("full", "full", make_spec(space, full_ch), full_macs, int(cm.params(full_ch)[0])),
             Candidate(f"uniform-{ratio:.4f}", "baseline", make_spec(space, uni_ch), uni_macs,
                       int(cm.params(uni_ch)[0]), ratio=ratio)]
    overrides = {"recipe.max_train_images": args.train_images, "recipe.max_test_images": args.test_images}
    if args.lr is not None:
        overrides["recipe.lr"] = args.lr
    overrides.update(recipe_overrides(args))
    cfg = load_train_config("smoke", overrides, run_dir=run_dir)
    trials = trial_configs(cands, cfg, "scratch-e", args.epochs, args.seeds, 1.0, 0.0)
    connect(None)
    outcomes = run_trials((run_dir / "train" / "ray").resolve(), f"regime-{args.name}", trials,
                          scratch_data(run.load_data(), cfg.recipe, cfg.seed), cfg, 1.0, 0.0, verbose=0)
    accs: dict[str, list[float]] = {}
    for o in sorted(outcomes, key=lambda o: int(o.trial["seed"])):
        if o.error is not None or o.metrics.get("epoch") != o.trial["epochs"]:
            raise SystemExit(f"trial {o.trial['name']} seed {o.trial['seed']} did not finish: {o.error}")
        accs.setdefault(o.trial["name"], []).append(float(o.metrics["test_top1"]))
    rows = {}
    for c in cands:
        a = accs[c.name]
        rows[c.kind] = {"name": c.name, "macs": c.macs, "test_top1_per_seed": a, "mean": statistics.mean(a),
                        "std": statistics.stdev(a) if len(a) > 1 else 0.0}
    gap = rows["full"]["mean"] - rows["baseline"]["mean"]
    spread = max(rows["full"]["std"], rows["baseline"]["std"])
    qualifies = gap >= 0.03 and spread <= gap / 3
    report = {"name": args.name, "config": args.config, "dataset": run.config.data.name,
              "width_mult": args.width_mult, "epochs": args.epochs, "lr": cfg.recipe.lr,
              "warmup_epochs": cfg.recipe.warmup_epochs, "augment": cfg.recipe.augment,
              "train_images": args.train_images, "test_images": args.test_images, "seeds": args.seeds,
              "full_macs": full_macs, "rows": rows, "gap": gap, "max_std": spread, "qualifies": qualifies,
              "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(report, indent=1))
    print(f"regime {args.name}: full {100 * rows['full']['mean']:.2f} +- {100 * rows['full']['std']:.2f}, "
          f"uniform {ratio:.3f}x {100 * rows['baseline']['mean']:.2f} +- {100 * rows['baseline']['std']:.2f}; "
          f"gap {100 * gap:.2f} points, largest std {100 * spread:.2f}: "
          f"{'QUALIFIES' if qualifies else 'does not qualify'}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
