"""Generator input and sampling, compared by proxy fidelity (issue 11 part 4; protocol pre-registered
in BENCHMARKS.md, "Third attempt and the generator-input / sampling comparison").

Four arms of PruningNet, each meta-trained with the quickstart config at ``--width-mult`` for every
``--meta-seeds`` seed: LU (each generator reads its layer's [in, out] ratios, one uniform random
vector per step: the default), BU (each generator reads its block's whole vector, as MetaPruning),
LS and BS (sandwich sampling: max, min and one random vector per step, for a third of LU's steps, so
that every arm makes the same number of forward/backward passes). The vectors are trained from
scratch once (``bench_fidelity.py`` on the first LU run); every other PruningNet only re-scores them
(``bench_fidelity.py --rescore``). Reports Kendall's tau of proxy vs scratch top-1 per arm and seed,
over all vectors and inside the band, and applies the pre-registered rule (to BU, LS and BS only).
LSE and BSE (``--arms LU,LSE,BSE`` on the same ``--out``: LU's runs and the scratch side are reused)
are sandwich arms for as many steps as LU, added after the pre-registered result to tell whether
sandwich ranked worse because it trained less.

Run by hand, e.g. in D's setting::

    .venv/bin/python benchmarks/bench_generator_input.py --width-mult 0.125 --epochs 4 --images 3500 \\
        --out /tmp/geninput --json benchmarks/results/generator_input.json
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# arm: generator input, sampling, steps as a fraction of LU's (sandwich makes 3 passes per step)
ARMS = {"LU": ("layer", "uniform", 1), "BU": ("block", "uniform", 1), "LS": ("layer", "sandwich", 1 / 3),
        "BS": ("block", "sandwich", 1 / 3),
        # not pre-registered: sandwich for as many steps as LU (3x its passes), to tell less training from
        # the sampling itself
        "LSE": ("layer", "sandwich", 1), "BSE": ("block", "sandwich", 1)}


def sh(*cmd: str) -> None:
    print("$ " + " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def meta_train(out: Path, arm: str, seed: int, width: float, max_steps: int | None) -> Path:
    run = out / f"{arm}-{seed}"
    if (run / "pruningnet.pt").is_file():
        return run
    gen_input, sampling, _ = ARMS[arm]
    cmd = [sys.executable, "-m", "metaprune", "train-pruningnet", "-c", "quickstart", "--run-dir", str(run),
           "--quiet", "--set", f"seed={seed}", "--set", f"space.options.width_mult={width}",
           "--set", f"model.generator_input={gen_input}", "--set", f"train.sampling={sampling}"]
    if max_steps is not None:
        cmd += ["--set", f"train.max_steps={max_steps}"]
    if (run / "config.yaml").is_file():  # interrupted: resume it
        cmd = [sys.executable, "-m", "metaprune", "train-pruningnet", "--resume", str(run), "--quiet"]
    sh(*cmd)
    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width-mult", type=float, required=True)
    ap.add_argument("--epochs", type=int, default=4, help="scratch epochs")
    ap.add_argument("--images", type=int, default=3500, help="scratch training images")
    ap.add_argument("--warmup-epochs", type=float, default=None)
    ap.add_argument("--augment", action="store_true")
    ap.add_argument("--scratch-seeds", type=int, default=3)
    ap.add_argument("--meta-seeds", default="0,1")
    ap.add_argument("--arms", default="LU,BU,LS,BS")
    ap.add_argument("--n-space", type=int, default=24)
    ap.add_argument("--n-band", type=int, default=12)
    ap.add_argument("--band-width", type=float, default=0.05)
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.meta_seeds.split(",")]
    arms = args.arms.split(",")
    assert arms[0] == "LU", "the first arm is the default, LU: its first run carries the scratch side"
    setting = {"width_mult": args.width_mult, "epochs": args.epochs, "images": args.images,
               "warmup_epochs": args.warmup_epochs, "augment": args.augment, "scratch_seeds": args.scratch_seeds,
               "meta_seeds": seeds, "n_space": args.n_space, "n_band": args.n_band, "band_width": args.band_width}
    saved = out / "setting.json"  # runs and results under --out are reused only for the same setting
    if saved.is_file() and json.loads(saved.read_text()) != setting:
        raise SystemExit(f"{out} holds results of another setting ({saved}); use a new --out")
    saved.write_text(json.dumps(setting, indent=1))

    runs, walls = {}, {}
    lu_steps = None
    for arm in arms:
        for seed in seeds:
            steps = None if ARMS[arm][2] == 1 else math.ceil(lu_steps * ARMS[arm][2])
            t = time.time()
            run = meta_train(out, arm, seed, args.width_mult, steps)
            walls[f"{arm}-{seed}"] = round(time.time() - t, 1)
            status = json.loads((run / "status.json").read_text())
            if arm == "LU" and lu_steps is None:
                lu_steps = int(status["total_steps"])
            runs[(arm, seed)] = (run, status)

    vec = ["--seed", "0", "--n-space", str(args.n_space), "--n-band", str(args.n_band),
           "--band-width", str(args.band_width)]
    fid = [sys.executable, str(HERE / "bench_fidelity.py")]
    scratch = out / "scratch.json"
    first = runs[("LU", seeds[0])][0]
    if not scratch.is_file():
        extra = ["--warmup-epochs", str(args.warmup_epochs)] if args.warmup_epochs is not None else []
        extra += ["--augment"] if args.augment else []
        sh(*fid, "--run", str(first), *vec, "--epochs", str(args.epochs), "--images", str(args.images),
           "--seeds", str(args.scratch_seeds), *extra, "--json", str(scratch))
    base = json.loads(scratch.read_text())
    results = {}
    for (arm, seed), (run, status) in runs.items():
        f = out / f"fidelity-{arm}-{seed}.json"
        if run == first:
            res = base
        else:
            if not f.is_file():
                sh(*fid, "--run", str(run), *vec, "--rescore", str(scratch), "--json", str(f))
            res = json.loads(f.read_text())
        results[(arm, seed)] = {"tau_all": res["tau_proxy_all"], "tau_band": res["tau_proxy_band"],
                                "steps": status["total_steps"], "meta_wall_s": status.get("wall_s"),
                                "loss_spikes": status.get("loss_spikes"),
                                "proxy_range": [min(r["proxy_top1"] for r in res["rows"]),
                                                max(r["proxy_top1"] for r in res["rows"])]}
    table = {}
    for arm in arms:
        rs = [results[(arm, s)] for s in seeds]
        table[arm] = {"generator_input": ARMS[arm][0], "sampling": ARMS[arm][1], "steps_vs_lu": round(ARMS[arm][2], 3),
                      "tau_all_per_seed": [r["tau_all"][0] for r in rs], "tau_band_per_seed": [r["tau_band"][0] for r in rs],
                      "tau_all": round(float(np.mean([r["tau_all"][0] for r in rs])), 3),
                      "tau_band": round(float(np.mean([r["tau_band"][0] for r in rs])), 3),
                      "steps": [r["steps"] for r in rs], "meta_wall_s": [r["meta_wall_s"] for r in rs],
                      "loss_spikes": [r["loss_spikes"] for r in rs], "proxy_range": [r["proxy_range"] for r in rs]}
    lu = table["LU"]
    better = [a for a in arms[1:] if a in ("BU", "LS", "BS") and table[a]["tau_all"] > lu["tau_all"] and table[a]["tau_band"] > lu["tau_band"]]
    keep = max(better, key=lambda a: table[a]["tau_all"] + table[a]["tau_band"]) if better else "LU"
    report = {"setting": setting,
              "tau_macs_all": base["tau_macs_all"], "tau_macs_band": base["tau_macs_band"],
              "tau_seed0_vs_seed1_all": base.get("tau_seed0_vs_seed1_all"),
              "tau_seed0_vs_seed1_band": base.get("tau_seed0_vs_seed1_band"),
              "test_top1_range": base.get("test_top1_range"), "mean_seed_gap": base.get("mean_seed_gap"),
              "arms": table, "rule_keeps": keep, "meta_walls_s": walls, "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(report, indent=1))
    for arm in arms:
        a = table[arm]
        print(f"{arm}: tau all {a['tau_all']:+.3f} {a['tau_all_per_seed']}, band {a['tau_band']:+.3f} "
              f"{a['tau_band_per_seed']}")
    print(f"MACs alone: all {base['tau_macs_all'][0]:+.3f}, band {base['tau_macs_band'][0]:+.3f}; "
          f"rule keeps {keep}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
