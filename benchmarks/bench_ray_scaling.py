"""Ray scaling benchmark: 4 scratch-training trials on a 2-CPU local Ray cluster (1 CPU each, two
at a time) against the same 4 trainings one after another in one process (torch using as many threads as the cluster has CPUs).

The four networks are two non-uniform specs of the smoke space (MobileNetV1 x0.25 at 32x32) and
their uniform-width baselines, trained on mnist5k. Ray time is the Tuner's ``fit()`` (the local
cluster is started before the clock); the ratio is sequential / Ray. The machine's load average is
recorded, since other processes on a small box disturb both sides.

Ray efficiency (issue 17) = the trials' own training seconds (each trial's ``wall_s``: its epochs'
training and test evaluation, timed inside the trial) summed / (Ray CPUs x ``fit()`` wall seconds).
1.0 means every CPU of the cluster trained all the time; worker start-up, imports, data hand-over,
checkpoints and Tune's bookkeeping are what it loses.

    .venv/bin/python benchmarks/bench_ray_scaling.py --epochs 3 --images 1024
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from metaprune.training import load_train_config
from metaprune.training.loop import fit, scratch_data
from metaprune.training.plan import _searched, trial_configs, with_baselines
from pruningnet import get_space, make_spec

SPACE = dict(input_size=32, small_input=True, in_channels=1, num_classes=10, width_mult=0.25)


def candidates(seed: int):
    """Two random specs (units in the upper half of their choices) and their baselines."""
    sp = get_space("mobilenet_v1", **SPACE)
    rng = np.random.default_rng(seed)
    specs = []
    for i in range(2):
        ch = {u.name: int(rng.choice(u.choices[len(u.choices) // 2:])) for u in sp.units}
        specs.append(_searched(f"searched-{i}", make_spec(sp, ch), None, None))
    return with_baselines(specs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--images", type=int, default=1024, help="training images per trial")
    ap.add_argument("--cpus", type=int, default=2, help="Ray cluster CPUs (1 per trial)")
    ap.add_argument("--seq-threads", type=int, default=None,
                    help="torch threads of the sequential side (default: the Ray cluster's CPUs)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the figures here")
    args = ap.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

    cfg = load_train_config("smoke", {"recipe.max_train_images": args.images, "seed": args.seed})
    data = scratch_data(cfg.data.load(cfg.seed), cfg.recipe, cfg.seed)
    cands = candidates(args.seed)
    n_cpus = os.cpu_count() or 1
    seq_threads = args.seq_threads or args.cpus

    load_start = os.getloadavg()[0]
    # sequential: one process, torch free to use every core
    seq_trials = trial_configs(cands, cfg, "scratch-e", args.epochs, 1, seq_threads, 0)
    t0 = time.perf_counter()
    seq_top1 = [fit(t, data)["test_top1"] for t in seq_trials]
    seq_s = time.perf_counter() - t0
    print(f"sequential: {seq_s:.1f} s", file=sys.stderr, flush=True)

    import ray

    from metaprune.training.runner import run_trials

    ray.init(num_cpus=args.cpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    try:
        ray_trials = trial_configs(cands, cfg, "scratch-e", args.epochs, 1, 1, 0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            outcomes = run_trials(Path(tmp), "bench", ray_trials, data, cfg, 1, 0, verbose=0)
            ray_s = time.perf_counter() - t0
    finally:
        ray.shutdown()
    assert all(o.error is None for o in outcomes), [o.error for o in outcomes]
    out = {"trials": len(ray_trials), "epochs": args.epochs, "train_images": len(data.train),
           "ray_cpus": args.cpus, "sequential_threads": seq_threads,
           "sequential_s": round(seq_s, 2), "ray_s": round(ray_s, 2), "speedup": round(seq_s / ray_s, 3),
           "trial_train_s": [round(o.metrics["wall_s"], 2) for o in outcomes],
           "ray_efficiency": round(sum(o.metrics["wall_s"] for o in outcomes) / (args.cpus * ray_s), 3),
           "sequential_top1": [round(x, 4) for x in seq_top1],
           "ray_top1": [round(o.metrics["test_top1"], 4) for o in outcomes],
           "loadavg_1m_start": round(load_start, 2), "loadavg_1m_end": round(os.getloadavg()[0], 2), "machine": f"{platform.machine()}, {n_cpus} CPUs"}
    print(json.dumps(out, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
