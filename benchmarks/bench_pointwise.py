"""Meta-training wall time with the PruningNet's 1x1 convs as convs or as matrix products, on NCHW or
channels-last input (issue 17: ``pruningnet.hypernet.POINTWISE_MATMUL_DEVICES``, ``train.channels_last``).

Each arm meta-trains a config end to end in a fresh process (``metaprune train-pruningnet``; its
``status.json`` wall time, which excludes start-up and data loading) and reports the final logged
loss. Arms are ``KERNEL:LAYOUT``: ``conv:off`` is the version before (every conv a conv, NCHW),
``matmul:on`` meta-training now (the default). Arms alternate in rounds, in the order given, so a drift
of the machine falls on all. Run by hand::

    .venv/bin/python benchmarks/bench_pointwise.py --rounds 3 --json benchmarks/results/pointwise_smoke.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"smoke": None, "smoke_shufflenet_v2": 60, "smoke_mobilenet_v3_small": 60}  # max_steps (None: all)

_ARM = """
import sys
import pruningnet.hypernet as h
if sys.argv[1] == "conv":
    h.POINTWISE_MATMUL_DEVICES = ()
from metaprune.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def arm(kernel: str, layout: str, config: str, max_steps: int | None, tmp: str, r: int) -> dict:
    run = Path(tmp) / f"{config}-{kernel}-{layout}-{r}"
    cmd = [sys.executable, "-c", _ARM, kernel, "train-pruningnet", "-c", config, "--run-dir", str(run), "--quiet",
           "--set", f"train.channels_last={layout}"] + (["--set", f"train.max_steps={max_steps}"] if max_steps else [])
    p = subprocess.run(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if p.returncode:
        raise SystemExit(f"{kernel}:{layout} on {config} failed: {p.stderr.strip()[-500:]}")
    status = json.loads((run / "status.json").read_text())
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    return {"wall_s": status["wall_s"], "steps": status["step"], "final_loss": last["loss"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default="conv:off,matmul:off,matmul:on")
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    arms = [tuple(a.split(":")) for a in args.arms.split(",")]
    for kernel, layout in arms:
        if kernel not in ("conv", "matmul") or layout not in ("on", "off"):
            raise SystemExit(f"--arms {kernel}:{layout}; accepted: conv|matmul : on|off")
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            runs: dict = {f"{k}:{lay}": [] for k, lay in arms}
            for r in range(args.rounds):
                for kernel, layout in arms:
                    res = arm(kernel, layout, config, CONFIGS.get(config), tmp, r)
                    runs[f"{kernel}:{layout}"].append(res)
                    print(f"{config} round {r} {kernel}:{layout} {res['wall_s']:.1f} s ({res['steps']} steps, "
                          f"final loss {res['final_loss']:.4f})", flush=True)
            out[config] = {a: {"median_wall_s": round(statistics.median(x["wall_s"] for x in v), 2),
                               "wall_s": [x["wall_s"] for x in v], "final_loss": [x["final_loss"] for x in v]}
                           for a, v in runs.items()}
            print(config, {a: v["median_wall_s"] for a, v in out[config].items()}, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
