"""Our ``metapruning`` cost convention against MetaPruning's own counter, on its own MobileNetV2.

Issue 15: the paper's "FLOPs" come from ``mobilenetv2/searching/cal_FLOPs.py`` (hooks that add BN,
pooling and linear biases to conv MACs) applied to ``model_for_FLOPs.MobileNetV2`` (the paper's
widths, an expansion conv in the t=1 block, the last 1x1 fixed at 1280). This script imports both
from a checkout of the official repository (nothing of it is copied here), builds the official model
for uniform and random gene vectors on CPU, and compares its count with ``cost --convention
metapruning`` on ``mobilenet_v2 -o variant=metapruning`` (and the official conv + linear part with
our MACs).

Run by hand::

    git clone https://github.com/liuzechun/MetaPruning /tmp/MetaPruning
    .venv/bin/python benchmarks/check_metapruning_counter.py --official /tmp/MetaPruning
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--official", required=True, help="checkout of github.com/liuzechun/MetaPruning")
    ap.add_argument("--random", type=int, default=10, help="random gene vectors besides the uniform ones")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(args.official) / "mobilenetv2" / "searching"))
    torch.Tensor.cuda = lambda self, *a, **k: self  # the official scripts call .cuda(); run on CPU
    torch.nn.Module.cuda = lambda self, *a, **k: self
    import cal_FLOPs  # noqa: E402  (the official counter)
    import model_for_FLOPs  # noqa: E402  (the official network)
    from pruningnet import get_space
    from pruningnet.cost import cost_model

    sp = get_space("mobilenet_v2", variant="metapruning")
    cm = cost_model(sp)
    scales = model_for_FLOPs.overall_channel_scale  # 0.10, 0.13, ..., 1.00 (31), as ours
    assert [round(s, 2) for s in scales] == [round(r, 2) for r in sp.options["ratios"]]
    stage_units = ["stem"] + [f"stage{i}" for i in range(1, 8)]
    repeat = [1, 1, 2, 3, 4, 3, 3, 1]  # the official search's stage_repeat
    mid_units = [u for u in sp.unit_names if u.endswith(".expand")]
    rng = np.random.default_rng(0)
    rows = []
    cases = [("uniform", [i] * 8, [i] * 17) for i in (0, 10, 20, 30)]
    cases += [("random", list(rng.integers(0, 31, 8)), list(rng.integers(0, 31, 17))) for _ in range(args.random)]
    for kind, stage_ids, mid_ids in cases:
        overall = [g for g, n in zip(stage_ids, repeat) for _ in range(n)]  # one gene per block, tied per stage
        model = model_for_FLOPs.MobileNetV2(np.array(overall), np.array(mid_ids)).eval()
        with torch.no_grad():
            official = cal_FLOPs.print_model_parm_flops(model) * 1e6
        convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
        ch = {u: int(sp.unit(u).max * scales[g]) for u, g in zip(stage_units + mid_units, stage_ids + mid_ids)}
        ours = int(cm.metapruning_flops(ch)[0])
        rows.append({"kind": kind, "official": round(official), "ours": ours, "macs": int(cm.macs(ch)[0]),
                     "convs": len(convs)})
        print(f"{kind:8s} official {official / 1e6:9.3f}M  ours {ours / 1e6:9.3f}M  "
              f"(conv+linear MACs {rows[-1]['macs'] / 1e6:.3f}M)")
    worst = max(abs(r["official"] - r["ours"]) for r in rows)
    print(f"largest difference over {len(rows)} vectors: {worst} FLOPs")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "max_abs_diff": worst}, indent=1) + "\n")


if __name__ == "__main__":
    main()
