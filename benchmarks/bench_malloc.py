"""glibc's malloc left alone vs pinned (``metaprune/process/malloc.py``), on the jobs that run steps on the CPU.

Each arm is a fresh process (malloc settings are process-wide) with ``METAPRUNE_MALLOC`` set, in the
order given, so a drift of the machine falls on all: smoke meta-training end to end (its
``status.json`` wall time) and one step at 224 (``--batch``, default 8) of the static MobileNetV2-1.4
and of the PruningNet, in its previous (copied crop) and current (strided) product, on random vectors
and the max vector, beside static networks of the same random vectors (``bench_pruningnet.py --part
fused224``), with each process's peak RSS. Modes:
``default`` (glibc's own), ``mapped`` (thresholds pinned, blocks above 32 MiB still mapped per call: the
first issue-17 setting), ``steady`` (no block mapped). Run by hand::

    .venv/bin/python benchmarks/bench_malloc.py --modes mapped,steady,mapped,steady --json /tmp/malloc.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(cmd: list[str], env: dict, tmp: str) -> tuple[str, float]:
    """Run ``cmd``; its stdout and its own peak RSS in MiB (``wait4``'s rusage of that one child)."""
    out = Path(tmp) / "stdout.txt"
    with out.open("w") as f:
        p = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(p.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed")
    return out.read_text(), usage.ru_maxrss / 1024  # Linux: KiB


def arm(mode: str, steps: int, batch: int) -> dict:
    env = {**os.environ, "METAPRUNE_MALLOC": mode}
    with tempfile.TemporaryDirectory() as tmp:
        rss_meta, status = None, {}
        if steps:
            _, rss_meta = _run([sys.executable, "-m", "metaprune", "train-pruningnet", "-c", "smoke", "--run-dir",
                                f"{tmp}/run", "--quiet", "--set", f"train.max_steps={steps}"], env, tmp)
            status = json.loads(Path(f"{tmp}/run/status.json").read_text())
        _, rss_224 = _run([sys.executable, str(HERE / "bench_pruningnet.py"), "--part", "fused224", "--arms",
                           "static_same,pruningnet_copied,pruningnet_now,pruningnet_max", "--batch", str(batch),
                           "--json", f"{tmp}/r.json"],
                          env, tmp)
        r = json.loads(Path(f"{tmp}/r.json").read_text())
    return {"mode": mode, "smoke_meta_training_s": status.get("wall_s"), "smoke_steps": status.get("step"),
            "batch": batch, "static224_step_s": r["static_max_s"], "pruningnet224_copied_step_s": r["pruningnet_copied_s"],
            "pruningnet224_step_s": r["pruningnet_now_s"], "pruningnet224_optimizer_s": r["pruningnet_now_opt_s"],
            "static224_same_vectors_step_s": r["static_same_s"], "pruningnet224_max_step_s": r["pruningnet_max_s"],
            "smoke_meta_training_peak_rss_mib": rss_meta and round(rss_meta), "step224_peak_rss_mib": round(rss_224)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="mapped,steady,mapped,steady", help="of default, mapped, steady")
    ap.add_argument("--smoke-steps", type=int, default=162,
                    help="the smoke config's whole meta-training (0: skip it)")
    ap.add_argument("--batch", type=int, default=8, help="the 224 steps' batch")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for mode in args.modes.split(","):
        r = arm(mode, args.smoke_steps, args.batch)
        rows.append(r)
        smoke = (f"smoke meta-training {r['smoke_meta_training_s']:.1f} s ({r['smoke_steps']} steps, peak RSS "
                 f"{r['smoke_meta_training_peak_rss_mib']} MiB); " if args.smoke_steps else "")
        print(f"malloc {mode:<7} {smoke}batch-{args.batch} step at 224: static {r['static224_step_s']:.3f} s, "
              f"PruningNet copied crop {r['pruningnet224_copied_step_s']:.3f} s (ratio "
              f"{r['pruningnet224_copied_step_s'] / r['static224_step_s']:.3f}), now {r['pruningnet224_step_s']:.3f} s "
              f"(ratio {r['pruningnet224_step_s'] / r['static224_step_s']:.3f}; optimizer {r['pruningnet224_optimizer_s']:.3f} s; "
              f"over the same vectors' static networks ({r['static224_same_vectors_step_s']:.3f} s) "
              f"{r['pruningnet224_step_s'] / r['static224_same_vectors_step_s']:.3f}); max vector "
              f"{r['pruningnet224_max_step_s']:.3f} s (ratio {r['pruningnet224_max_step_s'] / r['static224_step_s']:.3f}); "
              f"peak RSS {r['step224_peak_rss_mib']} MiB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
