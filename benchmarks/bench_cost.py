"""Cost-model throughput: MobileNetV2 channel vectors costed per second (MACs and params, batched).

Run by hand: .venv/bin/python benchmarks/bench_cost.py [--n 200000]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from metaprune import get_space
from pruningnet.cost import cost_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    sp = get_space("mobilenet_v2")  # MetaPruning's 1.4x space at 224, 25 units
    cm = cost_model(sp)
    rng = np.random.default_rng(0)
    x = np.stack([rng.choice(u.choices, size=args.n) for u in sp.units], axis=1)
    best = float("inf")
    for _ in range(args.repeats):
        t = time.perf_counter()
        cm.macs(x)
        cm.params(x)
        best = min(best, time.perf_counter() - t)
    print(f"{args.n} MobileNetV2 vectors (MACs + params) in {best:.3f} s (best of {args.repeats}): "
          f"{args.n / best:,.0f} vectors/s")


if __name__ == "__main__":
    main()
