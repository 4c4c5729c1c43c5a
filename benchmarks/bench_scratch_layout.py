"""Scratch training on the CPU in NCHW vs channels-last (``recipe.channels_last``), end to end.

Each arm trains the smoke space's (``--config``) max network and its uniform 0.75 network from scratch on the real
MNIST digits (``mnist5k``) with the smoke recipe at the quickstart's size (``--epochs``, 3,500 training
and 1,000 test images) through ``metaprune.training.loop.fit``, the function every Tune trial runs,
at 1 and 2 torch threads; arms alternate in rounds (the layout that goes first too), seeds differ by round. Reports wall seconds per
trial and test top-1 (the layouts differ in rounding only, so top-1 should agree within seed noise).
Run by hand::

    .venv/bin/python benchmarks/bench_scratch_layout.py --rounds 2 --json benchmarks/results/scratch_layout.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from metaprune.config import load_config
from metaprune.metatrain.config import MetaTrainConfig
from metaprune.store.runs import resolve_space
from metaprune.training.loop import fit, scratch_data
from metaprune.training.recipe import load_train_config

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--config", default="smoke", help="a shipped meta-training config: its space and data")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cfg = load_config(MetaTrainConfig, REPO / "configs" / f"{args.config}.yaml")
    splits = cfg.data.load(cfg.seed)
    space = resolve_space(cfg, splits)
    base = load_train_config(str(REPO / "configs" / "train" / "smoke.yaml")).recipe
    recipe = {**base.__dict__, "max_train_images": 3500, "max_test_images": 1000}
    nets = {"max": space.max_channels(), "uniform0.75": space.uniform_channels(0.75)}
    runs: dict = {}
    for r in range(args.rounds):
        for threads in map(int, args.threads.split(",")):
            for net, channels in nets.items():
                for cl in ((False, True) if r % 2 == 0 else (True, False)):  # who goes first alternates
                    rec = {**recipe, "channels_last": cl}
                    data = scratch_data(splits, type(base)(**rec), r)
                    trial = {"space": space.name, "options": dict(space.options), "channels": channels,
                             "recipe": rec, "seed": r, "epochs": args.epochs, "threads": threads, "gpus": 0}
                    t = time.perf_counter()
                    last = fit(trial, data)
                    wall = time.perf_counter() - t
                    key = f"{net} threads={threads} {'channels_last' if cl else 'nchw'}"
                    runs.setdefault(key, []).append({"wall_s": round(wall, 2), "test_top1": last["test_top1"]})
                    print(f"round {r} {key}: {wall:.1f} s, test top-1 {last['test_top1']:.4f}", flush=True)
    out = {k: {"median_wall_s": round(statistics.median(x["wall_s"] for x in v), 2), "runs": v}
           for k, v in runs.items()}
    for k, v in out.items():
        print(k, v["median_wall_s"], [x["test_top1"] for x in v["runs"]])
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
