"""Where trained glyphs networks err: how much of the error is case ambiguity (issue 26, part 2).

No glyphs setting passed the width rule: the full network scores about 95-96% and a network at 35% of
its MACs about 94-95%. This reads trained networks of a glyphs run and splits their test errors into
those between classes whose glyphs differ mostly by size (the 15 letters EMNIST "balanced" merges
for that reason: C I J K L M O P S U V W X Y Z, upper with lower case) plus the digit/letter pairs
0-O-o and 1-I-l, and the rest. If the ambiguous pairs hold most of the errors, width cannot open a
gap there, and a regime needs those classes merged or size kept as a cue.

    .venv/bin/python benchmarks/bench_glyphs_confusions.py --run RUN \
        --full RUN/baselines/full-KEY.pt --trials RUN/train/ray/scratch-*/uniform-0.5625-s* \
        --json benchmarks/results/glyphs_confusions.json

Networks: ``--full`` (a full-width state_dict of the run's space, as `metaprune baseline` caches it)
and ``--trials`` (Ray trial directories of `metaprune train`: the channels come from ``params.json``,
the weights from its newest ``checkpoint_*/state.pt``, read with ``weights_only=True``). Every network
is scored on the run's whole test split (every image of the test fonts).
"""
from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from metaprune.baselines.full import load_full_checkpoint
from metaprune.data.glyphs import CLASSES
from metaprune.store.fileio import load_weights
from metaprune.store.runs import open_run
from metaprune.training.resume import last_checkpoint
from pruningnet import build_model, make_spec

EMNIST_MERGED = "CIJKLMOPSUVWXYZ"  # Cohen et al. 2017, EMNIST balanced: upper and lower case look alike
EXTRA_GROUPS = ("0Oo", "1Il")


def groups() -> list[set[int]]:
    """Classes that count as one when errors are forgiven for case and digit/letter look-alikes."""
    idx = {c: i for i, c in enumerate(CLASSES)}
    out = [{idx[c], idx[c.lower()]} for c in EMNIST_MERGED]
    for g in EXTRA_GROUPS:
        ids = {idx[c] for c in g}
        for s in [s for s in out if s & ids]:
            ids |= s
            out.remove(s)
        out.append(ids)
    return out


@torch.no_grad()
def predictions(model: torch.nn.Module, split) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    ys, ps = [], []
    for x, y in split.batches(256):
        ps.append(model(x).argmax(1).numpy())
        ys.append(y.numpy())
    return np.concatenate(ys), np.concatenate(ps)


def summary(y: np.ndarray, p: np.ndarray, merged: list[set[int]]) -> dict:
    same = {}
    for g in merged:
        for i in g:
            same[i] = g
    wrong = y != p
    ambiguous = np.array([bool(w) and int(b) in same.get(int(a), ()) for a, b, w in zip(y, p, wrong)])
    pairs = Counter((CLASSES[a], CLASSES[b]) for a, b in zip(y[wrong], p[wrong]))
    return {"images": int(len(y)), "top1": float(1 - wrong.mean()),
            "top1_lookalikes_forgiven": float(1 - (wrong & ~ambiguous).mean()),
            "errors": int(wrong.sum()), "errors_between_lookalikes": int(ambiguous.sum()),
            "top_confusions": [f"{a}->{b}: {n}" for (a, b), n in pairs.most_common(12)]}


def trial_model(space, trial_dir: Path) -> torch.nn.Module:
    trial = json.loads((trial_dir / "params.json").read_text())["trial"]
    # the trial's newest epoch checkpoint in its experiment or the experiment's resumes
    state_file = last_checkpoint(trial_dir.parent.parent, trial_dir.parent.name, trial)
    if state_file is None:
        raise SystemExit(f"{trial_dir}: no checkpoint_*/state.pt")
    state = load_weights(state_file, "trial checkpoint")
    model = build_model(make_spec(space, trial["channels"]))
    model.load_state_dict(state["model"])
    return model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a glyphs run directory (its space and test split)")
    ap.add_argument("--full", help="a full-width state_dict of the run's space")
    ap.add_argument("--trials", nargs="*", default=[], help="Ray trial directories of `metaprune train`")
    ap.add_argument("--json", required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    run = open_run(args.run)
    test = run.load_data().test
    merged = groups()
    nets = {}
    if args.full:
        nets["full"] = load_full_checkpoint(run.space, args.full)
    for d in map(Path, args.trials):
        nets[d.name] = trial_model(run.space, d)
    report = {"run": str(args.run), "lookalike_groups": ["".join(CLASSES[i] for i in sorted(g)) for g in merged],
              "networks": {}}
    for name, model in nets.items():
        y, p = predictions(model, test)
        report["networks"][name] = s = summary(y, p, merged)
        print(f"{name:28s} top-1 {100 * s['top1']:.2f}  look-alikes forgiven {100 * s['top1_lookalikes_forgiven']:.2f}  "
              f"errors {s['errors']} of {s['images']}, {s['errors_between_lookalikes']} between look-alikes  "
              f"{', '.join(s['top_confusions'][:6])}", flush=True)
    report["wall_s"] = round(time.time() - t0, 1)
    Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
