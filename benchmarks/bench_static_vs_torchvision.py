"""Our static MobileNetV2-1.4 against torchvision's, one SGD step at 224 (issue 17: "make our static
network as fast as torchvision's"). Same parameter count (6,108,776), same batch, same threads;
the two steps alternate round by round so machine load hits both alike; medians reported.

Run by hand::

    .venv/bin/python benchmarks/bench_static_vs_torchvision.py --batch 8 --threads 2 --rounds 12
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torchvision

    from pruningnet import build_model, get_space, make_spec

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=12)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    sp = get_space("mobilenet_v2", width_mult=1.4, round_to=8)
    models = {"metaprune": build_model(make_spec(sp, sp.max_channels())).train(),
              "torchvision": torchvision.models.mobilenet_v2(width_mult=1.4).train()}
    params = {k: sum(p.numel() for p in m.parameters()) for k, m in models.items()}
    assert params["metaprune"] == params["torchvision"], params
    x, y = torch.randn(args.batch, 3, 224, 224), torch.randint(0, 1000, (args.batch,))

    def stepper(m):
        opt = torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

        def step():
            loss = F.cross_entropy(m(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    steps = {k: stepper(m) for k, m in models.items()}
    for s in steps.values():
        s(), s()
    times = {k: [] for k in steps}
    for _ in range(args.rounds):
        for k, s in steps.items():
            t0 = time.perf_counter()
            s()
            times[k].append(round((time.perf_counter() - t0) * 1e3, 1))
    out = {"batch": args.batch, "threads": args.threads, "params": params["metaprune"],
           "median_ms": {k: statistics.median(v) for k, v in times.items()}, "ms": times}
    out["ratio"] = round(out["median_ms"]["metaprune"] / out["median_ms"]["torchvision"], 3)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
