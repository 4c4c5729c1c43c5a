"""Proxy options tuned for ranking (issue 26 part 4), compared by fidelity at equal compute.

A channel-only supernet ranking competition (CVPR 2021 lightweight NAS, track 1) reached rank
correlations near 0.97 with sandwich sampling and in-place distillation, fair sampling, weight decay
0 and the candidate's loss as the score. Each option is an arm here: one PruningNet per arm and
meta-seed, meta-trained with ``--config`` (default ``quickstart_glyphs``, the glyphs regime's
config; the regime's width via ``--set space.options.width_mult=...``) and these overrides:

  D    today's default: one uniform random vector per step                    N steps
  F    train.sampling=fair (FairNAS: every choice of every unit equally often)  N steps
  W    train.generator_weight_decay=0                                           N steps
  S    train.sampling=sandwich (max, min, one random vector per step)           N/3 steps
  SD   sandwich + train.distill=inplace (others learn the max's soft labels)    N/3 steps
  SDW  SD + train.generator_weight_decay=0 (the competition's recipe, as far as it applies here)

Equal compute is equal forward/backward passes: a sandwich step makes 3, so the sandwich arms run
ceil(N/3) steps, N being D's steps (``--steps``, or the config's own when not given); the JSON
records every arm's steps and passes. S is the control for SD (distillation alone). The fourth
option, the loss as the score (search ``eval.score: loss``), needs no training: every arm's
PruningNet scores each vector twice, by proxy top-1 and by minus its cross-entropy on the whole
search split (BN re-estimated as in the search), and both taus are reported.

Ground truth: scratch top-1 of a fixed set of vectors, read from ``--scratch`` (the ``--json`` of
``benchmarks/bench_fidelity.py``: >= 24 vectors stratified over MACs and >= 12 in a +-5% MACs band,
trained from scratch with several seeds). When that file does not exist it is made first by
``bench_fidelity.py`` on D's first run with ``--fidelity-args`` (hours in the regime). Kendall's tau
of each proxy against the mean scratch top-1, over all vectors and inside the band
(``bench_fidelity``'s own functions), beside MACs' tau and the scratch seed-vs-seed tau (the
ceiling). The rule pre-registered in ``benchmarks/regime_glyphs_candidates.md``: an option becomes a
default only if its mean tau over the meta-seeds is higher than D's (top-1 score) over all vectors
**and** in the band.

Run by hand, e.g. in the regime (the scratch side made once, then reused)::

    .venv/bin/python benchmarks/bench_proxy_options.py --set space.options.width_mult=0.5 \\
        --meta-seeds 0,1,2 --out /tmp/proxy-options --scratch /tmp/proxy-options/scratch.json \\
        --fidelity-args "--n-space 24 --n-band 12 --band-width 0.05 --epochs 4 --images 12400 \\
        --test-images 4000 --seeds 3 --augment --warmup-epochs 1.0" \\
        --json benchmarks/results/proxy_options.json

A plumbing check (meaningless figures): ``--config smoke --steps 6 --meta-seeds 0`` with a small
``--fidelity-args "--n-space 4 --n-band 3 --epochs 1 --images 256 --test-images 128 --seeds 2"``.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: arm -> (meta-training overrides, forward/backward passes per step)
ARMS = {
    "D": ({}, 1),
    "F": ({"train.sampling": "fair"}, 1),
    "W": ({"train.generator_weight_decay": 0}, 1),
    "S": ({"train.sampling": "sandwich"}, 3),
    "SD": ({"train.sampling": "sandwich", "train.distill": "inplace"}, 3),
    "SDW": ({"train.sampling": "sandwich", "train.distill": "inplace", "train.generator_weight_decay": 0}, 3),
}
SCORES = ("top1", "loss")


def sh(*cmd: str) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True)


def meta_train(out: Path, arm: str, seed: int, config: str, sets: list[str], steps: int | None) -> Path:
    """The arm's PruningNet for ``seed`` (reused when done, resumed when interrupted)."""
    run = out / f"{arm}-{seed}"
    if (run / "pruningnet.pt").is_file():
        return run
    if (run / "config.yaml").is_file():
        sh(sys.executable, "-m", "metaprune", "train-pruningnet", "--resume", str(run), "--quiet")
        return run
    cmd = [sys.executable, "-m", "metaprune", "train-pruningnet", "-c", config, "--run-dir", str(run), "--quiet",
           "--set", f"seed={seed}"]
    for s in sets:
        cmd += ["--set", s]
    for key, value in ARMS[arm][0].items():
        cmd += ["--set", f"{key}={value}"]
    if steps is not None:
        cmd += ["--set", f"train.max_steps={steps}"]
    sh(*cmd)
    return run


def score_rows(run: Path, rows: list[dict]) -> list[dict]:
    """Proxy top-1 and loss of each scratch row's vector with ``run``'s PruningNet: BN re-estimated
    on the run's eval batches, the whole search split (as ``bench_fidelity.py`` scores)."""
    import torch

    from metaprune.evaluation import bn_batches, evaluate
    from metaprune.store.runs import open_run
    from pruningnet.cost import cost_model

    torch.set_num_threads(1)
    r = open_run(run)
    space, data, net = r.space, r.load_data(), r.load_pruningnet()
    ec = r.config.eval
    batches = bn_batches(data, ec.bn_batches, ec.batch_size, r.seed, "cpu")
    cm = cost_model(space)
    out = []
    for row in rows:
        ch = dict(zip(space.unit_names, map(int, row["channels"])))
        if len(row["channels"]) != len(space.unit_names) or int(cm.macs(ch)[0]) != row["macs"]:
            raise SystemExit(f"{run}: vector {row['name']} of the scratch file is not in this run's space "
                             f"(MACs {row['macs']} there); meta-train with the scratch file's config")
        res = evaluate(net, ch, data, max_images=None, batches=batches)
        out.append({"name": row["name"], "macs": row["macs"], "top1": res["top1"], "loss": res["loss"]})
    return out


def taus(rows: list[dict], scored: list[dict]) -> dict:
    """Kendall's tau of each score (top-1, minus the loss) against mean scratch top-1, all and band."""
    from bench_fidelity import _tau

    by = {s["name"]: s for s in scored}
    out = {}
    for group, rs in (("all", rows), ("band", [r for r in rows if r["name"].startswith("band")])):
        rs = [r for r in rs if r.get("test_top1") is not None]
        truth = [r["test_top1"] for r in rs]
        out[f"top1_{group}"] = _tau([by[r["name"]]["top1"] for r in rs], truth)
        out[f"loss_{group}"] = _tau([-by[r["name"]]["loss"] for r in rs], truth)
    return out


def decide(table: dict) -> dict:
    """The pre-registered rule against D's top-1 proxy: higher mean tau over all vectors and in the band."""
    base = table["D"]["top1"]
    out = {}
    for arm, per_score in table.items():
        for score, t in per_score.items():
            if (arm, score) == ("D", "top1"):
                continue
            out[f"{arm}/{score}"] = bool(t["tau_all"] > base["tau_all"] and t["tau_band"] > base["tau_band"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="quickstart_glyphs", help="meta-training config (name or YAML)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override for every arm's config, e.g. space.options.width_mult=0.5")
    ap.add_argument("--steps", type=int, default=None,
                    help="D's meta-training steps (sandwich arms: a third); default: the config's")
    ap.add_argument("--meta-seeds", default="0")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--scratch", required=True, help="bench_fidelity.py --json of scratch-trained vectors "
                                                     "(made with --fidelity-args when missing)")
    ap.add_argument("--fidelity-args", default="", help="bench_fidelity.py arguments that make --scratch")
    ap.add_argument("--out", required=True)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    t0 = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = [int(s) for s in args.meta_seeds.split(",")]
    arms = args.arms.split(",")
    bad = [a for a in arms if a not in ARMS]
    if bad or arms[0] != "D":
        raise SystemExit(f"--arms {args.arms}: accepted: D first, then any of {', '.join(ARMS)}")
    setting = {"config": args.config, "set": args.set, "steps": args.steps, "meta_seeds": seeds}
    saved = out / "setting.json"  # runs under --out are reused only for the same setting
    if saved.is_file() and json.loads(saved.read_text()) != setting:
        raise SystemExit(f"{out} holds runs of another setting ({saved}); use a new --out")
    saved.write_text(json.dumps(setting, indent=1))

    runs, d_steps = {}, args.steps
    for arm in arms:
        for seed in seeds:
            per_step = ARMS[arm][1]
            steps = d_steps if per_step == 1 else (None if d_steps is None else math.ceil(d_steps / per_step))
            t = time.time()
            run = meta_train(out, arm, seed, args.config, args.set, steps)
            status = json.loads((run / "status.json").read_text())
            if arm == "D" and d_steps is None:
                d_steps = int(status["total_steps"])
            runs[(arm, seed)] = (run, {"steps": status["total_steps"], "passes": status["total_steps"] * per_step,
                                       "meta_wall_s": status.get("wall_s"), "bench_wall_s": round(time.time() - t, 1),
                                       "loss_spikes": status.get("loss_spikes")})

    scratch = Path(args.scratch)
    if not scratch.is_file():
        sh(sys.executable, str(HERE / "bench_fidelity.py"), "--run", str(runs[("D", seeds[0])][0]),
           *shlex.split(args.fidelity_args), "--json", str(scratch))
    from bench_fidelity import diagnostics

    base = json.loads(scratch.read_text())
    rows = [r for r in base["rows"] if r.get("test_top1") is not None]
    if not rows:
        raise SystemExit(f"{scratch}: no scratch-trained vector with a test top-1")
    per_run = {}
    for (arm, seed), (run, info) in runs.items():
        f = out / f"scores-{arm}-{seed}.json"
        scored = json.loads(f.read_text()) if f.is_file() else []
        have = {s["name"]: s for s in scored}
        for r in rows:  # a cached score is kept only for the very vector it scored
            if r["name"] in have and have[r["name"]].get("macs", r["macs"]) != r["macs"]:
                raise SystemExit(f"{f}: {r['name']} scored a vector of {have[r['name']]['macs']} MACs, the scratch "
                                 f"file's has {r['macs']}; use a new --out")
        missing = [r for r in rows if r["name"] not in have]
        if missing:  # scratch files grow (bench_fidelity.py --merge): score only the new vectors
            scored += score_rows(run, missing)
            f.write_text(json.dumps(scored, indent=1))
        per_run[(arm, seed)] = {**info, "tau": taus(rows, scored)}
    table = {}
    for arm in arms:
        rs = [per_run[(arm, s)] for s in seeds]
        table[arm] = {score: {"tau_all_per_seed": [r["tau"][f"{score}_all"][0] for r in rs],
                              "tau_band_per_seed": [r["tau"][f"{score}_band"][0] for r in rs],
                              "tau_all": round(float(np.mean([r["tau"][f"{score}_all"][0] for r in rs])), 3),
                              "tau_band": round(float(np.mean([r["tau"][f"{score}_band"][0] for r in rs])), 3)}
                      for score in SCORES}
    diag = diagnostics(base)
    report = {"setting": {**setting, "d_steps": d_steps, "scratch": str(scratch),
                          "vectors": len(rows), "band_vectors": sum(r["name"].startswith("band") for r in rows),
                          "scratch_epochs": base.get("epochs"), "scratch_seeds": base.get("seeds")},
              "arms": {arm: {"overrides": ARMS[arm][0], "passes_per_step": ARMS[arm][1],
                             "runs": [per_run[(arm, s)] for s in seeds], **table[arm]} for arm in arms},
              "tau_macs_all": base.get("tau_macs_all"), "tau_macs_band": base.get("tau_macs_band"),
              "ceiling_seed0_vs_seed1_all": diag.get("tau_seed0_vs_seed1_all"),
              "ceiling_seed0_vs_seed1_band": diag.get("tau_seed0_vs_seed1_band"),
              # with >= 3 scratch seeds: the mean tau over seed pairs, and of each seed vs the others' mean
              **{f"ceiling_{k}": v for k, v in diag.items() if k.startswith(("tau_seed_pairs", "tau_seed_vs_rest"))},
              "beats_default": decide(table), "wall_s": round(time.time() - t0, 1)}
    print(json.dumps(report, indent=1))
    ceil_all, ceil_band = report["ceiling_seed0_vs_seed1_all"], report["ceiling_seed0_vs_seed1_band"]
    print(f"ceiling (scratch seed 0 vs 1): all {ceil_all[0] if ceil_all else '-'}, band "
          f"{ceil_band[0] if ceil_band else '-'}; MACs alone: all {report['tau_macs_all'][0]}, band "
          f"{report['tau_macs_band'][0]}")
    if "ceiling_tau_seed_pairs_mean_all" in report and "ceiling_tau_seed_pairs_mean_band" in report:
        print(f"ceiling over seed pairs: all {report['ceiling_tau_seed_pairs_mean_all']:+.3f}, band "
              f"{report['ceiling_tau_seed_pairs_mean_band']:+.3f}; one seed vs the others' mean: all "
              f"{report['ceiling_tau_seed_vs_rest_mean_all']:+.3f}, band {report['ceiling_tau_seed_vs_rest_mean_band']:+.3f}")
    for arm in arms:
        for score in SCORES:
            t = table[arm][score]
            print(f"{arm:>3} {score:>4}: tau all {t['tau_all']:+.3f} {t['tau_all_per_seed']}, band "
                  f"{t['tau_band']:+.3f} {t['tau_band_per_seed']}"
                  + ("" if (arm, score) == ("D", "top1") else
                     f"  {'beats' if report['beats_default'][f'{arm}/{score}'] else 'does not beat'} D/top1"))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
