"""Which settings make the PruningNet's training step fast on *this* CPU (issue 31).

MobileNetV2-1.4 at 224 (MetaPruning's space, 1000 classes), meta-training's fused SGD for every arm
(``metaprune.metatrain.loop._optimizer``), random vectors (each PruningNet arm draws its own: oneDNN
caches a primitive per conv shape, so an arm on another's vectors would find its shapes ready), arms
alternated in rounds with a rotating order so a drift of the machine falls on all. Medians in seconds.

``--part sweep``: the static max network (NCHW and channels-last) against the PruningNet with its 1x1
convs run as matrix products up to N input elements (``pruningnet.hypernet.POINTWISE_MATMUL_MAX_ELEMENTS``;
``--thresholds``, ``0`` = every 1x1 a conv, ``inf`` = every 1x1 a product), channels-last input; also
the PruningNet given NCHW input (as a user's script passes it) and on the max vector (NCHW input).
``--part amp``: the same step in fp32 and under ``torch.autocast("cpu", torch.bfloat16)`` (oneDNN's
AMX/AVX-512-BF16 paths where the CPU has them), PruningNet and static max network.

Run by hand::

    .venv/bin/python benchmarks/bench_cpu_rule.py --part sweep [--batch 8] [--rounds 3] --json benchmarks/results/cpu_rule_sweep_b8.json
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
import torch.nn.functional as F

from metaprune.latency.machine import device_name
from metaprune.process.malloc import steady_allocator
from metaprune.metatrain.loop import _optimizer, sample_vectors
from pruningnet import hypernet
from pruningnet.build import build_model
from pruningnet.hypernet import PruningNet
from pruningnet.spec import make_spec

TC = SimpleNamespace(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=4e-5)  # MetaPruning's


def _threshold(s: str) -> float:
    return float("inf") if s == "inf" else float(int(s))


def _rounds(arms: dict, rounds: int, steps: int, y: torch.Tensor) -> dict:
    """``arms``: name -> (make_steps(round) -> list of (forward, optimizer), setup callable or None).
    Median step seconds per arm; the first step of an arm in each round is untimed (it warms up)."""
    times: dict = {k: [] for k in arms}
    names = list(arms)
    for r in range(rounds):
        shift = r % len(names)
        for k in names[shift:] + names[:shift]:
            make, setup = arms[k]
            restore = setup() if setup else None
            try:
                for i, (fwd, opt) in enumerate(make(r)):
                    t = time.perf_counter()
                    loss = F.cross_entropy(fwd(), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    if i:
                        times[k].append(time.perf_counter() - t)
            finally:
                if restore:
                    restore()
    return {k: float(np.median(v)) for k, v in times.items()}


def _pn_arm(net, opt, sp, x, steps: int, seed: int, max_vector: bool = False):
    def make(r):
        rng = np.random.default_rng([r, seed])
        vecs = [sp.max_channels() if max_vector else sample_vectors(sp, rng, "uniform")[0] for _ in range(steps + 1)]
        return [(lambda ch=ch: net(x, ch), opt) for ch in vecs]
    return make


def _with_threshold(n: float):
    def setup():
        old = hypernet.POINTWISE_MATMUL_MAX_ELEMENTS
        hypernet.POINTWISE_MATMUL_MAX_ELEMENTS = n

        def restore():
            hypernet.POINTWISE_MATMUL_MAX_ELEMENTS = old
        return restore
    return setup


def sweep(batch: int, rounds: int, steps: int, thresholds: list[str]) -> dict:
    from metaprune import get_space

    sp = get_space("mobilenet_v2")
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    xcl = x.contiguous(memory_format=torch.channels_last)
    net = PruningNet(sp, 32).train()
    static = build_model(make_spec(sp, sp.max_channels())).train()
    static_cl = build_model(make_spec(sp, sp.max_channels())).train().to(memory_format=torch.channels_last)
    static_cl.load_state_dict(static.state_dict())
    s_opt, scl_opt = _optimizer(static, TC), _optimizer(static_cl, TC)
    arms: dict = {"static_max": (lambda r: [(lambda: static(x), s_opt)] * (steps + 1), None),
                  "static_max_cl": (lambda r: [(lambda: static_cl(xcl), scl_opt)] * (steps + 1), None)}
    for j, t in enumerate(thresholds):
        arms[f"pn_cl_{t}"] = (_pn_arm(net, _optimizer(net, TC), sp, xcl, steps, 100 + j), _with_threshold(_threshold(t)))
    arms["pn_nchw_input"] = (_pn_arm(net, _optimizer(net, TC), sp, x, steps, 1), None)
    arms["pn_max_nchw_input"] = (_pn_arm(net, _optimizer(net, TC), sp, x, steps, 2, max_vector=True), None)
    arms["pn_max_cl"] = (_pn_arm(net, _optimizer(net, TC), sp, xcl, steps, 3, max_vector=True), None)
    med = _rounds(arms, rounds, steps, y)
    out = {f"{k}_s": round(v, 4) for k, v in med.items()}
    out.update({f"ratio_{k}": round(v / med["static_max"], 3) for k, v in med.items() if k.startswith("pn_")})
    out.update({f"ratio_{k}_vs_cl": round(v / med["static_max_cl"], 3) for k, v in med.items() if k.startswith("pn_")})
    return out


def amp(batch: int, rounds: int, steps: int) -> dict:
    from metaprune import get_space

    sp = get_space("mobilenet_v2")
    torch.manual_seed(0)
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    xcl = x.contiguous(memory_format=torch.channels_last)
    net = PruningNet(sp, 32).train()
    static = build_model(make_spec(sp, sp.max_channels())).train().to(memory_format=torch.channels_last)
    s_opt = _optimizer(static, TC)

    def bf16(make):
        def wrapped(r):
            out = []
            for fwd, opt in make(r):
                def f(fwd=fwd):
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return fwd().float()
                out.append((f, opt))
            return out
        return wrapped

    static_make = lambda r: [(lambda: static(xcl), s_opt)] * (steps + 1)  # noqa: E731
    arms = {"static_max_cl_fp32": (static_make, None), "static_max_cl_bf16": (bf16(static_make), None),
            "pn_cl_fp32": (_pn_arm(net, _optimizer(net, TC), sp, xcl, steps, 10), None),
            "pn_cl_bf16": (bf16(_pn_arm(net, _optimizer(net, TC), sp, xcl, steps, 11)), None)}
    med = _rounds(arms, rounds, steps, y)
    out = {f"{k}_s": round(v, 4) for k, v in med.items()}
    out["ratio_pn_fp32"] = round(med["pn_cl_fp32"] / med["static_max_cl_fp32"], 3)
    out["ratio_pn_bf16_vs_static_bf16"] = round(med["pn_cl_bf16"] / med["static_max_cl_bf16"], 3)
    out["speedup_bf16_pn"] = round(med["pn_cl_fp32"] / med["pn_cl_bf16"], 3)
    out["speedup_bf16_static"] = round(med["static_max_cl_fp32"] / med["static_max_cl_bf16"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--part", default="sweep", choices=("sweep", "amp"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--thresholds", default="0,262144,1048576,4194304,inf",
                    help="--part sweep: input elements up to which a 1x1 conv runs as a product (0: none, inf: all)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steady_allocator()
    if args.part == "sweep":
        r = sweep(args.batch, args.rounds, args.steps, args.thresholds.split(","))
    else:
        r = amp(args.batch, args.rounds, args.steps)
    r.update(part=args.part, batch=args.batch, rounds=args.rounds, steps=args.steps, threads=args.threads,
             cpu=device_name("cpu"), torch=torch.__version__, date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))
    for k, v in r.items():
        print(f"{k}: {v}")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1) + "\n")


if __name__ == "__main__":
    main()
