"""Peak host (and device) memory of one candidate evaluation at the ImageNet config's shapes (issue 15).

``configs/imagenet_mobilenet_v2.yaml`` scores a candidate of MobileNetV2-1.4 at 224 (1000 classes)
after re-estimating BN on ``eval.bn_batches`` = 100 batches of ``eval.batch_size`` = 250 images. The
search draws those batches once and keeps them in host memory (pinned on CUDA machines), streaming
one at a time to the device. This script builds the ImageNet PruningNet, holds ``--bn-batches``
synthetic batches of ``--batch`` images at 224 as the evaluator does, generates one random candidate,
re-estimates BN and scores ``--score-images`` images, then reports peak RSS (and, on CUDA, peak
allocated device memory) after each phase.

Run by hand (CPU: 100 batches of 250 take many minutes on 2 cores; fewer show the per-batch term)::

    .venv/bin/python benchmarks/bench_candidate_memory.py --bn-batches 4 --batch 250 --device cpu
"""
from __future__ import annotations

import argparse
import json
import random
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pruningnet import get_space  # noqa: E402
from pruningnet.bn import recalibrate_bn  # noqa: E402
from pruningnet.hypernet import PruningNet  # noqa: E402


def rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bn-batches", type=int, default=100)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--score-images", type=int, default=250)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    out = {"bn_batches": args.bn_batches, "batch": args.batch, "device": str(dev), "rss_start_gib": round(rss_gib(), 2)}
    space = get_space("mobilenet_v2", width_mult=1.4)
    torch.manual_seed(0)
    net = PruningNet(space).to(dev).eval()
    out["generator_params"] = sum(p.numel() for p in net.parameters())
    out["rss_after_pruningnet_gib"] = round(rss_gib(), 2)
    pin = dev.type == "cuda"
    batches = [torch.randn(args.batch, 3, 224, 224) for _ in range(args.bn_batches)]
    batches = [b.pin_memory() for b in batches] if pin else batches
    out["held_batches_gib"] = round(sum(b.numel() * 4 for b in batches) / 2**30, 2)
    out["rss_after_batches_gib"] = round(rss_gib(), 2)
    t0 = time.perf_counter()
    ch = {u.name: random.Random(0).choice(u.choices) for u in space.units}
    model = net.generate(ch)
    recalibrate_bn(model, batches)
    with torch.no_grad():
        model(torch.randn(args.score_images, 3, 224, 224, device=dev))
    out["candidate_s"] = round(time.perf_counter() - t0, 1)
    out["rss_peak_gib"] = round(rss_gib(), 2)
    if dev.type == "cuda":
        out["device_peak_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
