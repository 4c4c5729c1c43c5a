"""CPU oversubscription (issue 17): a meta-training step alone, beside a busy core, and two jobs at once
with and without the project's thread cap (``METAPRUNE_MAX_THREADS``, which ``metaprune serve`` sets
to cores / concurrent jobs for every job it starts).

Each worker is a fresh process that asks for ``train.threads`` = 2 through
:func:`metaprune.process.threads.set_torch_threads` (the call every stage makes), builds the smoke config's
PruningNet and times ``--steps`` SGD steps on random vectors (batch 64, synthetic inputs of the smoke
shape) after 3 warm-up steps; the figure is the median step. Arms, one after another:

- ``alone``: one worker;
- ``busy_core``: one worker while a ``while True: pass`` process holds one core (the issue's case);
- ``two_jobs_uncapped``: two workers at once, no cap (2 x 2 threads on the machine's cores);
- ``two_jobs_capped``: two workers at once with ``METAPRUNE_MAX_THREADS`` = cores / 2, as the service
  runs two jobs.

    .venv/bin/python benchmarks/bench_threads.py --steps 15 [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, statistics, sys, time
import numpy as np, torch, torch.nn.functional as F
from metaprune.process.threads import set_torch_threads
from metaprune.config import load_config
from metaprune.metatrain.config import MetaTrainConfig
from metaprune.metatrain.loop import _optimizer, sample_vectors
from pruningnet import get_space
from pruningnet.hypernet import PruningNet
set_torch_threads(2)  # what the config asks for; the environment's cap wins
cfg = load_config(MetaTrainConfig, sys.argv[1])
sp = get_space(cfg.space.name, **{**cfg.space.options, "input_size": 28, "in_channels": 1, "num_classes": 10})
torch.manual_seed(0)
net = PruningNet(sp, cfg.model.hidden, cfg.model.generator_input).train()
opt = _optimizer(net, cfg.train)
x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
rng = np.random.default_rng(0)
times = []
for i in range(int(sys.argv[2]) + 3):
    t = time.perf_counter()
    loss = F.cross_entropy(net(x, sample_vectors(sp, rng, "uniform")[0]), y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    if i >= 3:
        times.append(time.perf_counter() - t)
print(json.dumps({"threads": torch.get_num_threads(), "step_s": statistics.median(times)}))
"""


def _workers(n: int, steps: int, env: dict) -> list[dict]:
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(REPO / "configs" / "smoke.yaml"), str(steps)],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    out = []
    for p in procs:
        stdout, err = p.communicate()
        if p.returncode:
            raise SystemExit(err[-2000:])
        out.append(json.loads(stdout.strip().splitlines()[-1]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    base = {k: v for k, v in os.environ.items() if k not in ("METAPRUNE_MAX_THREADS", "OMP_NUM_THREADS")}
    base["PYTHONPATH"] = str(REPO)
    res: dict = {"cores": cores, "steps": args.steps, "machine": platform.processor() or platform.machine(),
                 "loadavg_1m_start": round(os.getloadavg()[0], 2)}
    res["alone"] = _workers(1, args.steps, base)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        res["busy_core"] = _workers(1, args.steps, base)
    finally:
        spinner.kill()
        spinner.wait()
    res["two_jobs_uncapped"] = _workers(2, args.steps, base)
    res["two_jobs_capped"] = _workers(2, args.steps, {**base, "METAPRUNE_MAX_THREADS": str(max(1, cores // 2))})
    res["loadavg_1m_end"] = round(os.getloadavg()[0], 2)
    res["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    for arm in ("alone", "busy_core", "two_jobs_uncapped", "two_jobs_capped"):
        steps = ", ".join(f"{w['step_s'] * 1e3:.0f} ms ({w['threads']} threads)" for w in res[arm])
        print(f"{arm:18s} {steps}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
