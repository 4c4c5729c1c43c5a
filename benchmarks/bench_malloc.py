"""glibc's malloc left alone vs pinned (``metaprune/malloc.py``), on the jobs that run steps on the CPU.

Each arm is a fresh process (malloc settings are process-wide) with ``METAPRUNE_MALLOC`` set, in the
order given, so a drift of the machine falls on both: smoke meta-training end to end (its
``status.json`` wall time) and one batch-8 step at 224 of the static MobileNetV2-1.4 and of the
PruningNet (``bench_pruningnet.py --part fused224``), with each process's peak RSS. Run by hand::

    .venv/bin/python benchmarks/bench_malloc.py --modes default,steady,default,steady --json /tmp/malloc.json
"""
from __future__ import annotations

import argparse
import json
import os
import re
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


def arm(mode: str, steps: int) -> dict:
    env = {**os.environ, "METAPRUNE_MALLOC": mode}
    with tempfile.TemporaryDirectory() as tmp:
        _, rss_meta = _run([sys.executable, "-m", "metaprune", "train-pruningnet", "-c", "smoke", "--run-dir",
                            f"{tmp}/run", "--quiet", "--set", f"train.max_steps={steps}"], env, tmp)
        status = json.loads(Path(f"{tmp}/run/status.json").read_text())
        out, rss_224 = _run([sys.executable, str(HERE / "bench_pruningnet.py"), "--part", "fused224"], env, tmp)
    m = re.search(r"static max ([\d.]+) s; PruningNet before [\d.]+ s \(ratio [\d.]+\), fused SGD only [\d.]+ s "
                  r"\(ratio [\d.]+\), now ([\d.]+) s", out)
    return {"mode": mode, "smoke_meta_training_s": status["wall_s"], "smoke_steps": status["step"],
            "static224_step_s": float(m.group(1)), "pruningnet224_step_s": float(m.group(2)),
            "smoke_meta_training_peak_rss_mib": round(rss_meta), "step224_peak_rss_mib": round(rss_224)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--modes", default="default,steady,default,steady")
    ap.add_argument("--smoke-steps", type=int, default=162, help="the smoke config's whole meta-training")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    rows = []
    for mode in args.modes.split(","):
        r = arm(mode, args.smoke_steps)
        rows.append(r)
        print(f"malloc {mode:<7} smoke meta-training {r['smoke_meta_training_s']:.1f} s ({r['smoke_steps']} steps); "
              f"batch-8 step at 224: static {r['static224_step_s']:.3f} s, PruningNet {r['pruningnet224_step_s']:.3f} s "
              f"(ratio {r['pruningnet224_step_s'] / r['static224_step_s']:.2f}); peak RSS "
              f"{r['smoke_meta_training_peak_rss_mib']} / {r['step224_peak_rss_mib']} MiB", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "rows": rows},
                                              indent=1) + "\n")


if __name__ == "__main__":
    main()
