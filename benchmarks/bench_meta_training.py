"""Does meta-training converge on this machine? Loss curves and proxy top-1 over seeds x threads.

Issue 11: on an AMD EPYC machine the smoke config's meta-training diverged (loss 2.4 -> 8) and the
PruningNet barely learned. Each arm meta-trains ``configs/smoke.yaml`` (or ``--config``) once per
(seed, thread count) in its own process, then scores the max vector and the uniform 0.75 and 0.5
vectors (all on the smoke grid) with the search's proxy (BN re-estimated on 5 training batches,
500 search-split images). An arm is ``LR`` or ``LR:nocenter`` (the classifier's emitted weight not
centred, i.e. the code before the fix).

Run by hand, e.g.::

    .venv/bin/python benchmarks/bench_meta_training.py --arms 0.05:nocenter,0.05,0.3 \\
        --seeds 0,1,2 --threads 1,2 --out /tmp/bmt --json benchmarks/results/meta_training.json \\
        --plot docs/meta_training_loss.png
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one(run_dir: Path, config: str, seed: int, threads: int, lr: float, center: bool) -> dict:
    """Meta-train and score one (arm, seed, threads) in this process."""
    import torch

    from metaprune.cli.main import main as metaprune
    from metaprune.evaluation import evaluate
    from metaprune.store.runs import open_run
    from pruningnet.hypernet import PruningNet

    torch.set_num_threads(threads)
    PruningNet.center_classifier = center
    t0 = time.time()
    code = metaprune(["train-pruningnet", "-c", config, "--run-dir", str(run_dir), "--quiet",
                      "--set", f"seed={seed}", "--set", f"train.threads={threads}", "--set", f"train.lr={lr}"])
    if code != 0:
        raise SystemExit(f"meta-training {run_dir} exited {code}")
    wall = time.time() - t0
    run = open_run(run_dir)
    data, net, sp = run.load_data(), run.load_pruningnet(), run.space
    vectors = {"max": sp.max_channels(), "uniform_0.75": sp.uniform_channels(0.75),
               "uniform_0.5": sp.uniform_channels(0.5)}
    proxy = {k: evaluate(net, ch, data, bn_batches=5, max_images=500)["top1"] for k, ch in vectors.items()}
    lines = [json.loads(ln) for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    curve = [(d["step"], d["loss"]) for d in lines if "event" not in d]
    spikes = [d["step"] for d in lines if d.get("event") == "loss_spike"]
    return {"seed": seed, "threads": threads, "lr": lr, "center": center, "meta_train_s": round(wall, 1),
            "max_loss": max(v for _, v in curve), "final_loss": curve[-1][1], "spike_steps": spikes,
            "proxy_top1": proxy, "curve": curve}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(REPO / "configs" / "smoke.yaml"))
    ap.add_argument("--arms", default="0.05:nocenter,0.05,0.3")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="loss curves of seed 0, 2 threads, one line per arm")
    ap.add_argument("--one", nargs=5, metavar=("DIR", "SEED", "THREADS", "LR", "CENTER"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        d, seed, threads, lr, center = args.one
        print(json.dumps(one(Path(d), args.config, int(seed), int(threads), float(lr), center == "1")))
        return
    rows = []
    for arm in args.arms.split(","):
        lr, _, flag = arm.partition(":")
        center = flag != "nocenter"
        for seed in (int(s) for s in args.seeds.split(",")):
            for threads in (int(t) for t in args.threads.split(",")):
                d = Path(args.out) / arm.replace(":", "-") / f"seed{seed}-threads{threads}"
                if d.exists():
                    import shutil
                    shutil.rmtree(d)
                env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
                out = subprocess.run([sys.executable, __file__, "--config", args.config, "--out", args.out,
                                      "--one", str(d), str(seed), str(threads), lr, "1" if center else "0"],
                                     env=env, capture_output=True, text=True)
                if out.returncode != 0:
                    raise SystemExit(f"{d}: exited {out.returncode}\n{out.stderr[-3000:]}")
                row = {"arm": arm, **json.loads(out.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(f"{arm:>14} seed {seed} threads {threads}: max loss {row['max_loss']:.2f}, final "
                      f"{row['final_loss']:.3f}, spikes at {row['spike_steps']}, proxy top-1 "
                      + ", ".join(f"{k} {v:.3f}" for k, v in row["proxy_top1"].items())
                      + f" ({row['meta_train_s']} s)", flush=True)
    summary = {}
    for arm in dict.fromkeys(r["arm"] for r in rows):
        rs = [r for r in rows if r["arm"] == arm]
        summary[arm] = {k: [min(r["proxy_top1"][k] for r in rs), max(r["proxy_top1"][k] for r in rs)]
                        for k in rs[0]["proxy_top1"]}
        summary[arm]["max_loss"] = max(r["max_loss"] for r in rs)
        print(f"{arm}: " + ", ".join(f"{k} {v[0]:.3f}-{v[1]:.3f}" for k, v in summary[arm].items()
                                     if isinstance(v, list)) + f"; highest loss {summary[arm]['max_loss']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"config": args.config, "summary": summary, "rows": rows}, indent=1))
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4))
        for r in rows:
            if r["seed"] == 0 and r["threads"] == 2:
                ax.plot(*zip(*r["curve"]), label=f"{r['arm']} (proxy max {r['proxy_top1']['max']:.2f})")
        ax.set_xlabel("step")
        ax.set_ylabel("meta-training loss (one sampled vector per step)")
        ax.set_title(f"{Path(args.config).name}, seed 0, 2 threads")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
