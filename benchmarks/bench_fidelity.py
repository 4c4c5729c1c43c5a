"""Proxy fidelity: does the PruningNet's ranking predict scratch-trained accuracy, beyond MACs?

Samples ``--n-space`` random vectors across the space and ``--n-band`` more inside one +-10% MACs
band, scores each with the run's PruningNet (proxy top-1 on the whole search split, BN re-estimated),
trains each from scratch with one recipe as Ray Tune trials, and reports Kendall's tau of proxy vs
scratch test top-1 over all vectors and within the band, next to the tau of MACs alone.

Run by hand, e.g.:
  .venv/bin/python benchmarks/bench_fidelity.py --run runs/quickstart-... --epochs 2 --images 2000
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from metaprune.evaluation import bn_batches, evaluate
from metaprune.runs import open_run
from metaprune.training.loop import scratch_data
from metaprune.training.plan import Candidate, trial_configs
from metaprune.training.recipe import load_train_config
from metaprune.training.runner import connect, run_trials
from pruningnet.cost import cost_model
from pruningnet.spec import make_spec


def sample(space, rng, n_space: int, n_band: int, band_center: float):
    cm = cost_model(space)
    units = space.units
    draw = lambda k: np.stack([rng.choice(u.choices, size=k) for u in units], axis=1)  # noqa: E731
    spread = draw(n_space)
    lo_macs, hi_macs = int(cm.macs(space.min_channels())[0]), int(cm.macs(space.max_channels())[0])
    center = lo_macs + band_center * (hi_macs - lo_macs)
    band = []
    for _ in range(200):  # capped: 200 x 2,000 draws
        pool = draw(2000)
        macs = cm.macs(pool)
        band.extend(pool[np.abs(macs - center) <= 0.1 * center])
        if len(band) >= n_band:
            break
    band = np.array(band[:n_band])
    return spread, band, center


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True)
    ap.add_argument("--n-space", type=int, default=16)
    ap.add_argument("--n-band", type=int, default=8)
    ap.add_argument("--band-center", type=float, default=0.5, help="fraction of the MACs range")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--images", type=int, default=2000, help="training images per trial")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.time()
    run = open_run(args.run)
    space, data = run.space, run.load_data()
    rng = np.random.default_rng(args.seed)
    spread, band, center = sample(space, rng, args.n_space, args.n_band, args.band_center)
    net = run.load_pruningnet()
    ec = run.config.eval
    batches = bn_batches(data, ec.bn_batches, ec.batch_size, run.seed, "cpu")
    cm = cost_model(space)
    cands = []
    for group, rows in (("space", spread), ("band", band)):
        for i, row in enumerate(rows):
            ch = dict(zip(space.unit_names, map(int, row)))
            proxy = evaluate(net, ch, data, max_images=None, batches=batches)["top1"]
            spec = make_spec(space, ch)
            cands.append(Candidate(f"{group}-{i}", "searched", spec, int(cm.macs(ch)[0]),
                                   int(cm.params(ch)[0]), proxy_top1=proxy))
    cfg = load_train_config("smoke", {"recipe.max_train_images": args.images,
                                      "recipe.max_test_images": 1000}, run_dir=args.run)
    trials = trial_configs(cands, cfg, "scratch-e", args.epochs, 1, 1.0, 0.0)
    connect(None)
    sd = scratch_data(data, cfg.recipe, cfg.seed)
    storage = Path(args.run) / "fidelity"
    outcomes = run_trials(storage.resolve(), f"fidelity-{time.strftime('%H%M%S')}", trials, sd, cfg, 1.0, 0.0,
                          verbose=0)
    test = {o.trial["name"]: o.metrics.get("test_top1") for o in outcomes}
    rows = [{"name": c.name, "macs": c.macs, "proxy_top1": c.proxy_top1, "test_top1": test.get(c.name)}
            for c in cands]

    def tau(rs, key):
        rs = [r for r in rs if r["test_top1"] is not None]
        t = kendalltau([r[key] for r in rs], [r["test_top1"] for r in rs])
        return round(float(t.statistic), 3), round(float(t.pvalue), 3), len(rs)

    band_rows = [r for r in rows if r["name"].startswith("band")]
    res = {"run": args.run, "epochs": args.epochs, "images": args.images, "band_center_macs": int(center),
           "tau_proxy_all": tau(rows, "proxy_top1"), "tau_macs_all": tau(rows, "macs"),
           "tau_proxy_band": tau(band_rows, "proxy_top1"), "tau_macs_band": tau(band_rows, "macs"),
           "wall_s": round(time.time() - t0, 1), "rows": rows}
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
