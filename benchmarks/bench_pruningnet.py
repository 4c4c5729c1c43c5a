"""PruningNet figures: meta-training step time vs the largest static network, time per candidate
evaluation (generating weights once per candidate vs once per batch), and peak memory of ResNet-50
meta-training at 224.

Run by hand: .venv/bin/python benchmarks/bench_pruningnet.py [--part step,eval,memory] [--threads 2]

``--part fused224`` (issue 17): MobileNetV2-1.4 at 224 (``--batch``, default 8), the static max
network's step against the PruningNet's step on random vectors with autograd's backward through the
weight crops and for-loop SGD (since the strided product, autograd's backward of that product: the
"before" of BENCHMARKS.md's first table, 0.988 s, was through a copied crop), with only the fused
optimizer (``meta_train._optimizer``), with the
cropped backward on a copied crop, on a strided crop with every layer a conv on NCHW input (the
previous versions) and as meta-training runs now (fused SGD, the cropped backward, a strided product:
``WeightGenerator``; 1x1 convs as matrix products, channels-last input); the static max network also in
channels-last (its faster layout on the CPU); MetaPruning's momentum and weight decay;
alternated in rounds so drift of the machine hits every arm alike; ``--arms`` picks arms.

``--part eval_cl`` (issue 17): one candidate's evaluation with the network in NCHW and channels-last,
alternated: the smoke config's proxy (``metaprune.evaluation.evaluate``: 5 BN batches of 128, 500
search images) and MetaPruning's protocol at 224 on MobileNetV2-1.4 (5 BN batches of 16, 64 images;
random tensors), the same random vectors for both arms.

``--part official224 --official PATH`` (issue 17): the 224 protocol above for the official MetaPruning
PruningNet (``PATH/mobilenetv2/searching/mobilenet_v2.py`` of a checkout of
github.com/liuzechun/MetaPruning, imported from there, nothing copied; its ``infer``: reset BN
statistics, 5 forward passes in train mode, then evaluation, regenerating weights every pass) beside
ours in NCHW and channels-last, the latter also without folding BN into the convs before scoring (the
version before ``pruningnet.bn.fold_bn``), alternated in rounds on random candidates (our three arms in
a rotating order).

``--part execution --execution sliced,masked`` (issue 29): the meta-training step (forward,
cross-entropy, backward, meta-training's fused SGD; channels-last input; a new random vector every
step, the same vectors for every arm) run sliced and masked (``pruningnet.masked.MaskedPruningNet``:
every layer at max width with channel masks), alternated in rounds, on the smoke config (its batch)
and on MobileNetV2-1.4 at 224 (``--batch``); ``--json`` writes the figures. On the CPU only eager
execution exists (capture is CUDA's: ``benchmarks/gpu_check.py --only masked_step``).
"""
from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from metaprune.config import load_config
from metaprune.evaluation import bn_batches, evaluate
from metaprune.process.malloc import steady_allocator
from metaprune.metatrain.config import MetaTrainConfig
from metaprune.metatrain.loop import sample_vectors
from metaprune.store.runs import resolve_space
from pruningnet.build import build_model
from pruningnet.hypernet import PruningNet, WeightGenerator
from pruningnet.spec import make_spec


def _step_times(fn, opt, y, steps: int, warmup: int = 3) -> list[float]:
    times = []
    for i in range(steps + warmup):
        t = time.perf_counter()
        loss = F.cross_entropy(fn(i), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    return times[warmup:]


class _CopiedCropProduct(torch.autograd.Function):
    """The generators' product as it was before the strided one (commit 1672d65): the crop flattened to
    one matrix (a copy, kept for the backward), then one matrix-vector product. Here only so that
    ``--part fused224`` times the previous version beside the current one in the same process."""

    @staticmethod
    def forward(ctx, weight, bias, h, out_chs, in_chs):
        crop = weight[:out_chs, :in_chs]
        flat = crop.reshape(-1, weight.shape[-1])
        y = torch.matmul(flat, h).reshape(crop.shape[:-1]) + bias[:out_chs, :in_chs]
        ctx.save_for_backward(flat, h)
        ctx.crop, ctx.shapes = (out_chs, in_chs), (weight.shape, bias.shape, weight.dtype, bias.dtype)
        return y

    @staticmethod
    def backward(ctx, g):
        from pruningnet.hypernet import _outside_zeroed

        flat, h = ctx.saved_tensors
        (o, i), (w_shape, b_shape, w_dtype, b_dtype) = ctx.crop, ctx.shapes
        gw = _outside_zeroed(w_shape, w_dtype, g.device, o, i)
        torch.mul(g.unsqueeze(-1), h, out=gw[:o, :i])
        gb = _outside_zeroed(b_shape, b_dtype, g.device, o, i)
        gb[:o, :i] = g
        return gw, gb, torch.matmul(flat.t(), g.reshape(-1)), None, None


FUSED224_ARMS = ("static_max", "static_max_cl", "static_same", "pruningnet_before", "pruningnet_fused_sgd",
                 "pruningnet_copied", "pruningnet_conv", "pruningnet_all_products", "pruningnet_now", "pruningnet_max")


def fused_rounds(rounds: int, steps: int, batch: int = 8, arms: tuple = FUSED224_ARMS) -> dict:
    """Median step seconds, MobileNetV2-1.4 at 224, of the static max network (``static_max``; in
    channels-last ``static_max_cl``), of a static network of each random vector (``static_same``, in
    ``pruningnet_now``'s layout) and of the PruningNet on those vectors:
    ``pruningnet_before`` autograd's backward through the (strided) product and for-loop SGD; ``_fused_sgd`` only
    the fused optimizer; ``_copied`` fused SGD and the cropped backward with the crop copied to one
    matrix (the version before the strided product); ``_conv`` the strided product with every layer a
    conv and NCHW input (the version before pointwise products and channels-last); ``_all_products``
    every 1x1 conv a matrix product whatever its input's size, channels-last (the first version of
    that change); ``_now`` as meta-training runs (1x1 convs with inputs up to
    ``POINTWISE_MATMUL_MAX_ELEMENTS`` as matrix products, channels-last input); ``_max`` the same
    on the max vector. The arms before ``_now`` run 1x1 convs as convs on NCHW input. Each PruningNet
    arm runs on vectors of its own (see below), ``static_same`` on ``pruningnet_now``'s, after it. Also each arm's median optimizer step alone (``opt_s``: for the PruningNet one
    pass over every generator parameter, the part no crop avoids). Ratios: each PruningNet arm over
    ``static_max`` (how MetaPruning's figure is defined: a random vector's step over the full
    network's), ``now`` over ``static_same`` and ``max`` over ``static_max`` (the same networks)."""
    from types import SimpleNamespace

    from metaprune import get_space
    from metaprune.metatrain.loop import _optimizer
    from pruningnet import hypernet

    sp = get_space("mobilenet_v2")  # MetaPruning's 1.4x space at 224, 1000 classes
    x, y = torch.randn(batch, 3, 224, 224), torch.randint(0, 1000, (batch,))
    torch.manual_seed(0)
    net, static = PruningNet(sp, 32).train(), build_model(make_spec(sp, sp.max_channels())).train()
    tc = SimpleNamespace(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=False, weight_decay=4e-5)

    def loop_sgd(m):
        return torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=4e-5, foreach=False)

    strided, matmul_devices = hypernet._CroppedProduct, hypernet.POINTWISE_MATMUL_DEVICES
    pn_opts = {"pruningnet_before": loop_sgd(net)}
    pn_opts.update({k: _optimizer(net, tc) for k in ("pruningnet_fused_sgd", "pruningnet_copied", "pruningnet_conv",
                                                     "pruningnet_all_products", "pruningnet_now", "pruningnet_max")})
    # (cropped backward, product, devices with 1x1 convs as products, channels-last input)
    settings = {"pruningnet_before": (False, strided, (), False), "pruningnet_fused_sgd": (False, strided, (), False),
                "pruningnet_copied": (True, _CopiedCropProduct, (), False),
                "pruningnet_conv": (True, strided, (), False),
                "pruningnet_all_products": (True, strided, ("cpu",), True),
                "pruningnet_now": (True, strided, ("cpu",), True), "pruningnet_max": (True, strided, ("cpu",), True)}
    max_elements = hypernet.POINTWISE_MATMUL_MAX_ELEMENTS
    xcl = x.contiguous(memory_format=torch.channels_last)
    static_cl = build_model(make_spec(sp, sp.max_channels())).train().to(memory_format=torch.channels_last)
    static_cl.load_state_dict(static.state_dict())
    static_opt, static_cl_opt = loop_sgd(static), loop_sgd(static_cl)
    times: dict = {k: [] for k in arms}
    opt_times: dict = {k: [] for k in arms}
    try:
        # Each PruningNet arm draws its own vectors: oneDNN caches a primitive per conv shape, so an arm
        # run on vectors another arm has just run would find its shapes ready, which meta-training on
        # fresh vectors does not (a static network's first step at a new shape: 0.278 s, again 0.195 s).
        # static_same runs last, on pruningnet_now's vectors: a shared shape can only flatter it.
        order = [k for k in arms if k != "static_same"] + [k for k in arms if k == "static_same"]
        for r in range(rounds):
            drawn = {}
            for j, k in enumerate(FUSED224_ARMS):
                rng = np.random.default_rng([r, j])
                drawn[k] = [sample_vectors(sp, rng, "uniform")[0] for _ in range(steps + 1)]
            for k in order:
                vecs = drawn["pruningnet_now" if k == "static_same" else k]
                if k == "static_same":
                    cl = settings["pruningnet_now"][3]
                    models = [build_model(make_spec(sp, v)).train().to(
                        memory_format=torch.channels_last if cl else torch.contiguous_format) for v in vecs]
                    steps_of = [(lambda m=m: m(xcl if cl else x), loop_sgd(m)) for m in models]
                elif k == "static_max":
                    steps_of = [(lambda: static(x), static_opt)] * len(vecs)
                elif k == "static_max_cl":
                    steps_of = [(lambda: static_cl(xcl), static_cl_opt)] * len(vecs)
                else:
                    (WeightGenerator.cropped_backward, hypernet._CroppedProduct, hypernet.POINTWISE_MATMUL_DEVICES,
                     cl) = settings[k]
                    hypernet.POINTWISE_MATMUL_MAX_ELEMENTS = float("inf") if k == "pruningnet_all_products" else max_elements
                    chs = [sp.max_channels()] * len(vecs) if k == "pruningnet_max" else vecs
                    steps_of = [(lambda ch=ch, xin=xcl if cl else x: net(xin, ch), pn_opts[k]) for ch in chs]
                for i, (fwd, opt) in enumerate(steps_of):
                    if k == "static_same" and i:  # each network is new: one untimed step first, as every arm gets
                        F.cross_entropy(fwd(), y).backward()
                        opt.zero_grad(set_to_none=True)
                    t = time.perf_counter()
                    loss = F.cross_entropy(fwd(), y)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    t_opt = time.perf_counter()
                    opt.step()
                    if i:  # the first step of an arm warms it up
                        times[k].append(time.perf_counter() - t)
                        opt_times[k].append(time.perf_counter() - t_opt)
                steps_of = models = None
    finally:
        WeightGenerator.cropped_backward, hypernet._CroppedProduct, hypernet.POINTWISE_MATMUL_DEVICES = (
            True, strided, matmul_devices)
        hypernet.POINTWISE_MATMUL_MAX_ELEMENTS = max_elements
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {**{f"{k}_s": round(v, 4) for k, v in med.items()},
           **{f"{k}_opt_s": round(float(np.median(v)), 4) for k, v in opt_times.items()},
           "rounds": rounds, "steps": steps, "batch": batch}
    if "static_max" in med:
        out.update({f"ratio_{k[len('pruningnet_'):]}": round(med[k] / med["static_max"], 3)
                    for k in med if k.startswith("pruningnet_")})
    if "static_same" in med and "pruningnet_now" in med:
        out["ratio_now_vs_same"] = round(med["pruningnet_now"] / med["static_same"], 3)
    if "static_max_cl" in med:  # over the static max network in channels-last, its faster layout on the CPU
        out.update({f"ratio_{k[len('pruningnet_'):]}_vs_max_cl": round(med[k] / med["static_max_cl"], 3)
                    for k in med if k.startswith("pruningnet_")})
    return out


def _protocol224_inputs() -> tuple[list[torch.Tensor], torch.Tensor]:
    """MetaPruning's per-candidate inputs at 224: 5 BN batches of 16 and 64 images (random tensors)."""
    g = torch.Generator().manual_seed(0)
    return [torch.randn(16, 3, 224, 224, generator=g) for _ in range(5)], torch.randn(64, 3, 224, 224, generator=g)


def _ours224_s(net: PruningNet, ch: dict, bn: list, xv: torch.Tensor, channels_last: bool,
               fold: bool = True) -> float:
    """Seconds of one candidate with our PruningNet: generate, re-estimate BN, score ``xv`` (as
    ``metaprune.evaluation.evaluate`` does; ``fold=False``: without folding BN into the convs first)."""
    from pruningnet.bn import fold_bn, recalibrate_bn

    t = time.perf_counter()
    with torch.no_grad():
        model = net.generate(ch)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model = recalibrate_bn(model, bn)
        (fold_bn(model) if fold else model)(xv).argmax(1)
    return time.perf_counter() - t


def eval_layouts(space, data, rounds: int = 3, per_round: int = 4) -> dict:
    """Median seconds per candidate in NCHW and channels-last, smoke proxy and 224 protocol."""
    from metaprune import get_space

    out = {}
    torch.manual_seed(0)
    net = PruningNet(space, 16).eval()
    batches = bn_batches(data, 5, 128, 0, "cpu")
    times: dict = {False: [], True: []}
    hits: dict = {False: [], True: []}
    for r in range(rounds):
        rng = np.random.default_rng(r)
        vecs = [{u.name: int(rng.choice(u.choices)) for u in space.units} for _ in range(per_round)]
        for cl in (False, True):
            for ch in vecs:
                t = time.perf_counter()
                hits[cl].append(evaluate(net, ch, data, max_images=500, batches=batches, channels_last=cl)["top1"])
                times[cl].append(time.perf_counter() - t)
    out["smoke"] = {"nchw_s": float(np.median(times[False])), "channels_last_s": float(np.median(times[True])),
                    "max_top1_difference": max(abs(a - b) for a, b in zip(hits[False], hits[True]))}
    sp = get_space("mobilenet_v2")  # MetaPruning's 1.4x space at 224
    torch.manual_seed(0)
    net = PruningNet(sp, 32).eval()
    bn, xv = _protocol224_inputs()
    times = {False: [], True: []}
    for r in range(rounds):
        rng = np.random.default_rng(100 + r)
        vecs = [{u.name: int(rng.choice(u.choices)) for u in sp.units} for _ in range(2)]
        for cl in (False, True):
            for ch in vecs:
                times[cl].append(_ours224_s(net, ch, bn, xv, cl))
    out["protocol224"] = {"nchw_s": float(np.median(times[False])), "channels_last_s": float(np.median(times[True]))}
    return out


def official_rounds(path: str, rounds: int = 3, per_round: int = 2) -> dict:
    """Seconds per candidate, MetaPruning's protocol at 224: the official PruningNet against ours."""
    import sys
    from pathlib import Path

    from metaprune import get_space

    sys.path.insert(0, str(Path(path) / "mobilenetv2" / "searching"))
    import mobilenet_v2 as official  # noqa: E402 (the official searching model)

    torch.manual_seed(0)
    theirs = official.MobileNetV2()
    sp = get_space("mobilenet_v2")
    ours = PruningNet(sp, 32).eval()
    bn, xv = _protocol224_inputs()
    times: dict = {"official": [], "ours_nchw": [], "ours_channels_last_unfolded": [], "ours_channels_last": []}
    for r in range(rounds):
        rng = np.random.default_rng(200 + r)
        for _ in range(per_round):
            # as the official random_can: one width per stage (stage_repeat), one per block's mid
            stage = np.concatenate([[rng.integers(0, 31)] * n for n in (1, 1, 2, 3, 4, 3, 3, 1)])
            mid = rng.integers(0, 31, size=17)
            ch = {u.name: int(rng.choice(u.choices)) for u in sp.units}
            t = time.perf_counter()
            with torch.no_grad():  # the official infer(): reset BN, 5 train-mode passes, evaluate
                for m in theirs.modules():
                    if isinstance(m, torch.nn.BatchNorm2d):
                        m.running_mean = torch.zeros_like(m.running_mean)
                        m.running_var = torch.ones_like(m.running_var)
                theirs.train()
                for x in bn:
                    theirs(x, stage, mid)
                theirs.eval()
                theirs(xv, stage, mid).argmax(1)
            times["official"].append(time.perf_counter() - t)
            arms = [("ours_nchw", False, True), ("ours_channels_last_unfolded", True, False),
                    ("ours_channels_last", True, True)]
            shift = len(times["official"]) % len(arms)  # each arm first, middle and last in turn
            for key, cl, fold in arms[shift:] + arms[:shift]:
                times[key].append(_ours224_s(ours, ch, bn, xv, cl, fold))
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {**{f"{k}_s": round(v, 3) for k, v in med.items()},
            "spread": {k: round((max(v) - min(v)) / float(np.median(v)), 3) for k, v in times.items()},
            "speedup_vs_official": round(med["official"] / med["ours_channels_last"], 2),
            "speedup_vs_official_unfolded": round(med["official"] / med["ours_channels_last_unfolded"], 2),
            "candidates": rounds * per_round}


def step_ratio(space, hidden: int, batch: int, steps: int, generator_input: str = "layer", tc=None,
               rounds: int = 1) -> dict:
    """Median step seconds of the static max network and of the PruningNet (max vector, random
    vectors). ``tc``: build both optimizers as meta-training does (:func:`metaprune.metatrain.loop._optimizer`;
    default: plain SGD). ``rounds`` > 1 interleaves the three arms round by round, so that a drift of
    the machine's speed falls on all of them."""
    from metaprune.metatrain.loop import _optimizer

    opts = space.options
    x = torch.randn(batch, opts["in_channels"], opts["input_size"], opts["input_size"])
    y = torch.randint(0, opts["num_classes"], (batch,))
    net = PruningNet(space, hidden, generator_input)
    static = build_model(make_spec(space, space.max_channels()))

    def make(m):
        return _optimizer(m, tc) if tc is not None else torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)

    rng = np.random.default_rng(0)
    arms = {"static_max": (static, lambda i: static(x)), "pruningnet_max": (net, lambda i: net(x, space.max_channels())),
            "pruningnet_random": (net, lambda i: net(x, sample_vectors(space, rng, "uniform")[0]))}
    made = {k: make(m) for k, (m, _) in arms.items()}
    times: dict = {k: [] for k in arms}
    for _ in range(rounds):
        for k, (_, fn) in arms.items():
            times[k] += _step_times(fn, made[k], y, steps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {**{f"{k}_s": v for k, v in med.items()}, "ratio_max": med["pruningnet_max"] / med["static_max"],
            "ratio_random": med["pruningnet_random"] / med["static_max"],
            "generator_params": sum(p.numel() for p in net.parameters())}


EXECUTIONS = ("sliced", "masked")


def execution_rounds(space, hidden: int, batch: int, tc, executions: tuple, rounds: int, steps: int,
                     generator_input: str = "layer") -> dict:
    """Median step seconds per execution (``sliced``, ``masked``), interleaved round by round with the
    same random vectors; the static max network's step (channels-last) as the denominator."""
    from metaprune.metatrain.loop import _optimizer
    from pruningnet.masked import MaskedPruningNet

    opts = space.options
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, opts["in_channels"], opts["input_size"], opts["input_size"], generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, opts["num_classes"], (batch,), generator=g)
    torch.manual_seed(0)
    net = PruningNet(space, hidden, generator_input)
    masked = MaskedPruningNet(net)
    static = build_model(make_spec(space, space.max_channels())).to(memory_format=torch.channels_last)
    fwd = {"sliced": net, "masked": masked}
    opt, sopt = _optimizer(net, tc), _optimizer(static, tc)
    times: dict = {k: [] for k in ("static_max", *executions)}
    for r in range(rounds):
        vecs = [sample_vectors(space, np.random.default_rng([r, i]), "uniform")[0] for i in range(steps + 3)]
        order = list(executions)
        order = order[r % len(order):] + order[:r % len(order)]  # each arm first in turn
        times["static_max"] += _step_times(lambda i: static(x), sopt, y, steps)
        for k in order:
            times[k] += _step_times(lambda i, m=fwd[k]: m(x, vecs[i]), opt, y, steps)
    med = {k: float(np.median(v)) for k, v in times.items()}
    out = {"batch": batch, "rounds": rounds, "steps": steps, **{f"{k}_s": round(v, 4) for k, v in med.items()},
           "spread": {k: round((max(v) - min(v)) / float(np.median(v)), 3) for k, v in times.items()},
           **{f"ratio_{k}": round(med[k] / med["static_max"], 3) for k in executions}}
    if "sliced" in executions and "masked" in executions:
        out["masked_over_sliced"] = round(med["masked"] / med["sliced"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--part", default="step,step224,eval,memory")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--generator-input", default=None, choices=("layer", "block"),
                    help="the PruningNet's generator input (default: the smoke config's)")
    ap.add_argument("--batch", type=int, default=8, help="--part fused224: batch size")
    ap.add_argument("--rounds", type=int, default=3, help="--part fused224: rounds, every arm once per round")
    ap.add_argument("--steps", type=int, default=4, help="--part fused224: timed steps per arm and round")
    ap.add_argument("--arms", default=",".join(FUSED224_ARMS), help="--part fused224: arms, of " + ", ".join(FUSED224_ARMS))
    ap.add_argument("--json", default=None, help="--part fused224: write its figures here")
    ap.add_argument("--execution", default="sliced,masked",
                    help="--part execution: the PruningNet executions to time, of " + ", ".join(EXECUTIONS))
    ap.add_argument("--official", default=None, help="checkout of github.com/liuzechun/MetaPruning (--part official224)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    steady_allocator()  # as meta-training and candidate scoring run (METAPRUNE_MALLOC=default: glibc's own)
    parts = args.part.split(",")
    cfg = load_config(MetaTrainConfig, "configs/smoke.yaml")
    data = cfg.data.load(cfg.seed)
    space = resolve_space(cfg, data)
    if "step" in parts:
        gi = args.generator_input or cfg.model.generator_input
        r = step_ratio(space, cfg.model.hidden, cfg.train.batch_size, 10, gi, tc=cfg.train, rounds=3)
        print(f"smoke step (batch {cfg.train.batch_size}, {gi} input, meta-training's optimizer, 3 interleaved "
              f"rounds x 10 steps): static max {r['static_max_s']*1e3:.0f} ms, PruningNet max "
              f"{r['pruningnet_max_s']*1e3:.0f} ms (ratio {r['ratio_max']:.2f}), random vector "
              f"{r['pruningnet_random_s']*1e3:.0f} ms (ratio {r['ratio_random']:.2f})")
    if "step224" in parts:
        from metaprune import get_space
        sp = get_space("mobilenet_v2")  # MetaPruning's 1.4x space at 224, 1000 classes
        r = step_ratio(sp, 32, 8, 3)
        print(f"MobileNetV2-1.4 at 224 step (batch 8, hidden 32, {r['generator_params']/1e6:.0f}M generator "
              f"parameters): static max {r['static_max_s']:.2f} s, PruningNet max {r['pruningnet_max_s']:.2f} s "
              f"(ratio {r['ratio_max']:.2f})")
    if "fused224" in parts:
        arms = tuple(dict.fromkeys(["static_max", *args.arms.split(",")]))  # the ratios' denominator, always
        bad = [a for a in arms if a not in FUSED224_ARMS]
        if bad:
            raise SystemExit(f"--arms {bad[0]!r}; accepted: {', '.join(FUSED224_ARMS)}")
        r = fused_rounds(args.rounds, args.steps, args.batch, arms)
        pn = ", ".join(f"{k[len('pruningnet_'):]} {r[k + '_s']:.3f} s (ratio {r['ratio_' + k[len('pruningnet_'):]]:.3f}, "
                       f"optimizer {r[k + '_opt_s']:.3f} s)" for k in FUSED224_ARMS if k + "_s" in r and k.startswith("pruningnet_"))
        same = (f"; static of the same vectors {r['static_same_s']:.3f} s (now / same {r['ratio_now_vs_same']:.3f})"
                if "ratio_now_vs_same" in r else "")
        if "static_max_cl_s" in r:
            same += f"; static max channels-last {r['static_max_cl_s']:.3f} s" + "".join(
                f", {k[len('ratio_'):-len('_vs_max_cl')]} over it {v:.3f}" for k, v in r.items()
                if k.endswith("_vs_max_cl"))
        print(f"MobileNetV2-1.4 at 224, batch {r['batch']}, random vectors ({r['rounds']} rounds x {r['steps']} steps): "
              f"static max {r['static_max_s']:.3f} s; PruningNet (over static max) {pn}{same}")
        if args.json:
            Path(args.json).write_text(json.dumps(r, indent=1) + "\n")
    if "execution" in parts:
        executions = tuple(args.execution.split(","))
        bad = [e for e in executions if e not in EXECUTIONS]
        if bad:
            raise SystemExit(f"--execution {bad[0]!r}; accepted: {', '.join(EXECUTIONS)}")
        from metaprune import get_space

        gi = args.generator_input or cfg.model.generator_input
        res = {"threads": args.threads, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "smoke": execution_rounds(space, cfg.model.hidden, cfg.train.batch_size, cfg.train, executions,
                                         args.rounds, args.steps, gi),
               "mobilenet_v2_1.4_224": execution_rounds(get_space("mobilenet_v2", width_mult=1.4), 32, args.batch,
                                                        cfg.train, executions, args.rounds, args.steps)}
        for name in ("smoke", "mobilenet_v2_1.4_224"):
            r = res[name]
            print(f"{name}, batch {r['batch']} ({r['rounds']} rounds x {r['steps']} steps): static max "
                  f"{r['static_max_s']:.3f} s; " + ", ".join(f"{k} {r[k + '_s']:.3f} s (x{r['ratio_' + k]:.2f} static)"
                                                          for k in executions)
                  + (f"; masked/sliced {r['masked_over_sliced']:.3f}" if "masked_over_sliced" in r else "")
                  + f"; spread {r['spread']}")
        if args.json:
            Path(args.json).write_text(json.dumps(res, indent=1) + "\n")
    if "official224" in parts:
        if not args.official:
            raise SystemExit("--part official224 needs --official PATH (a checkout of liuzechun/MetaPruning)")
        r = official_rounds(args.official)
        print(f"MetaPruning's protocol at 224, {r['candidates']} random candidates: official {r['official_s']:.2f} s, "
              f"ours NCHW {r['ours_nchw_s']:.2f} s, ours channels-last without folding BN "
              f"{r['ours_channels_last_unfolded_s']:.2f} s ({r['speedup_vs_official_unfolded']:.2f}x), ours "
              f"channels-last {r['ours_channels_last_s']:.2f} s ({r['speedup_vs_official']:.2f}x the official); "
              f"spread (max-min)/median {r['spread']}")
    if "eval_cl" in parts:
        r = eval_layouts(space, data)
        print(f"candidate evaluation, smoke proxy: NCHW {r['smoke']['nchw_s']:.3f} s, channels-last "
              f"{r['smoke']['channels_last_s']:.3f} s (top-1 differs by at most {r['smoke']['max_top1_difference']:.3f}); "
              f"MetaPruning's protocol at 224: NCHW {r['protocol224']['nchw_s']:.2f} s, channels-last "
              f"{r['protocol224']['channels_last_s']:.2f} s")
    if "eval" in parts:
        torch.manual_seed(0)
        net = PruningNet(space, cfg.model.hidden, cfg.model.generator_input).eval()
        ch = space.uniform_channels(0.75)
        batches = bn_batches(data, cfg.eval.bn_batches, cfg.eval.batch_size, 0, "cpu")
        t = time.perf_counter()
        for _ in range(3):
            evaluate(net, ch, data, max_images=cfg.eval.max_images, batches=batches)
        once = (time.perf_counter() - t) / 3
        # the alternative: run PruningNet itself, regenerating every weight for every batch
        t = time.perf_counter()
        with torch.no_grad():
            for xb in batches:
                net(xb, ch)  # BN with batch statistics, as PruningNet has no running stats
            n = 0
            for xb, _ in data.search.batches(cfg.eval.batch_size):
                net(xb, ch)
                n += len(xb)
                if n >= cfg.eval.max_images:
                    break
        per_batch = time.perf_counter() - t
        print(f"candidate evaluation ({cfg.eval.bn_batches} BN batches + {cfg.eval.max_images} images): "
              f"generate once {once*1e3:.0f} ms; regenerate per batch {per_batch*1e3:.0f} ms")
    if "memory" in parts:
        from metaprune import get_space
        sp = get_space("resnet50")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        net = PruningNet(sp, hidden=32)
        n_params = sum(p.numel() for p in net.parameters())
        x = torch.randn(8, 3, 224, 224)
        y = torch.randint(0, 1000, (8,))
        opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        t = time.perf_counter()
        loss = F.cross_entropy(net(x, sample_vectors(sp, np.random.default_rng(0), "uniform")[0]), y)
        loss.backward()
        opt.step()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"ResNet-50 PruningNet (hidden 32): {n_params/1e6:.0f}M generator parameters; one SGD step at "
              f"224, batch 8: peak RSS {peak/1024**2:.2f} GiB (process before: {before/1024**2:.2f} GiB), "
              f"{time.perf_counter()-t:.1f} s")


if __name__ == "__main__":
    main()
