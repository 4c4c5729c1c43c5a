"""Meta-training input from an ImageNet-layout JPEG folder: our FolderSplit against torchvision's
ImageFolder + DataLoader with the same workers (issue 15).

The benchmark writes its own folder (``--images`` JPEGs of 256x256 in ``--classes`` classes, random
smooth colour fields, quality 90) unless it exists, then times passes of ``--pass-images`` images at
batch 64 with meta-training's transforms (RandomResizedCrop 224, flip, ToTensor, Normalize):

- ``torchvision``: ``datasets.ImageFolder`` (one scan) + ``DataLoader(shuffle=True, num_workers=W)``,
  a new loader per pass as a plain training loop makes it (workers start each pass);
- ``metaprune``: ``load_data("imagefolder")``'s train split, ``batches(...)`` per pass (one scan at
  load, per-image augmentation seeds, persistent workers after the first pass);
- ``resume``: a pass that starts at batch ``--resume-at`` (skipped batches are not decoded).

Run by hand::

    .venv/bin/python benchmarks/bench_folder_input.py --root /tmp/jpeg20k --workers 2 \\
        --json benchmarks/results/folder_input.json
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def make_folder(root: Path, images: int, classes: int, size: int = 256) -> float:
    from PIL import Image

    t0 = time.time()
    rng = np.random.default_rng(0)
    per_class = images // classes
    for split, n in (("train", per_class), ("val", max(1, per_class // 20))):
        for c in range(classes):
            d = root / split / f"c{c:03d}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)  # smooth field: JPEG-typical sizes
                Image.fromarray(small).resize((size, size), Image.BILINEAR).save(d / f"{i}.jpg", quality=90)
    return time.time() - t0


def timed_pass(batches, limit: int) -> tuple[float, int]:
    t0, seen = time.perf_counter(), 0
    for x, y in batches:
        seen += len(y)
        if seen >= limit:
            break
    return time.perf_counter() - t0, seen


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--images", type=int, default=20_000)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pass-images", type=int, default=2_048)
    ap.add_argument("--passes", type=int, default=2)
    ap.add_argument("--resume-at", type=int, default=16, help="batch a resumed pass starts at")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    root = Path(args.root)
    made = None if (root / "train").is_dir() else round(make_folder(root, args.images, args.classes), 1)

    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    from metaprune.data import load_data
    from metaprune.data.folder import IMAGENET_STATS

    out: dict = {"images": args.images, "classes": args.classes, "workers": args.workers, "batch": 64,
                 "pass_images": args.pass_images, "made_folder_s": made}
    tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(*IMAGENET_STATS)])
    t0 = time.perf_counter()
    tv = datasets.ImageFolder(str(root / "train"), transform=tf)
    out["torchvision_scan_s"] = round(time.perf_counter() - t0, 2)
    tv_rates = []
    for p in range(args.passes):
        loader = DataLoader(tv, batch_size=64, shuffle=True, num_workers=args.workers, drop_last=True,
                            generator=torch.Generator().manual_seed(p))
        s, n = timed_pass(loader, args.pass_images)
        tv_rates.append(round(n / s, 1))
        del loader
    out["torchvision_images_per_s"] = tv_rates

    t0 = time.perf_counter()
    data = load_data("imagefolder", root=str(root), seed=0, search_per_class=5, image_size=224)
    out["metaprune_load_s"] = round(time.perf_counter() - t0, 2)
    split = data.train
    split.workers = args.workers
    ours = []
    for p in range(args.passes):
        gen = torch.Generator().manual_seed(p)
        s, n = timed_pass(split.batches(64, shuffle=True, augment=True, generator=gen, drop_last=True),
                          args.pass_images)
        ours.append(round(n / s, 1))
    out["metaprune_images_per_s"] = ours
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    first = next(iter(split.batches(64, shuffle=True, augment=True, generator=gen, drop_last=True,
                                    start=args.resume_at)))
    out["resume_first_batch_s"] = round(time.perf_counter() - t0, 3)
    out["resume_skipped_images"] = args.resume_at * 64
    assert first[0].shape == (64, 3, 224, 224)
    print(json.dumps(out, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
