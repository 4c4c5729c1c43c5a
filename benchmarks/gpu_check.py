"""GPU figures in one run (issue 15): what a user meta-training and searching on ImageNet-sized inputs
gets from one GPU. Synthetic data throughout (nothing is downloaded); needs torch (and numpy) and this
repository only: no Ray, no DEAP, no YAML.

Figures, written to one JSON file (``--out``):

- ``meta_step``: a PruningNet step (random vector, forward, cross-entropy, backward, SGD) against the
  static max-width network's step, MobileNetV2-1.4 at 224, batch 64 and 256 (median ms, ratio);
- ``resnet50_memory``: ResNet-50's PruningNet, one step at batch 64 at 224: parameters and peak device
  memory;
- ``candidate_eval``: per-candidate evaluation with the MetaPruning protocol (generate the network,
  re-estimate BN on 5 batches of 16, score 64 validation images at 224), random vectors: median, min,
  max seconds;
- ``scratch``: scratch-training images/s of the static MobileNetV2-1.4 at 224 (batch 256) in fp32, bf16
  autocast, channels-last and both (the ``recipe.precision`` / ``recipe.channels_last`` code path);
- ``latency`` (issue 17): latency tables of MobileNetV2-1.4 and MobileNetV3-Small at 224 built on this
  device (batch 1 and 32, the default grid and timing), then predicted vs measured end to end over 20
  random vectors each (MAPE, bias, the sum of entries alone);
- ``masked_check`` (issue 29): masked execution against sliced on this device, one random vector of
  the meta-step space: largest logit and generator-gradient differences (TF32 off, so that only the
  reduction order differs);
- ``masked_step`` (issue 29): the masked PruningNet step (every layer at max width, channel masks,
  constant shapes) eager, recorded as CUDA graphs (``train.capture: graphs``) and compiled
  (``compile``), against the sliced step and the static max network's step, MobileNetV2-1.4 at 224,
  batch 64 and 256 (target: masked/static <= 1.10 at batch 64); capture on CUDA only;
- ``masked_eval`` (issue 29): per-candidate evaluation of the same protocol as ``candidate_eval`` in
  masked mode (median, min, max, spread; target spread <= 20%), the sliced one beside it, and the
  largest difference of the two modes' top-1 on the same candidates;
- ``latency_graphs`` (issue 29): latency tables at batch 1 and 32 built and checked with CUDA graph
  replays (``TimingConfig.cuda_graphs``, the default on CUDA) and eagerly: MAPE and round spread per
  batch size for each (target MAPE <= 10%, goal 5%);
- ``meta_train_cli``: the user's path, ``python -m metaprune train-pruningnet`` on the smoke config
  with generated data and ``train.device`` set to this device, once per ``train.amp`` (auto, fp16):
  exit status, steps, wall seconds and the last log lines.

Each section is timed and guarded: one that fails records its error and the others still run; the
JSON file is rewritten after every section, so a run cut short keeps what it measured.

``--device cpu --quick`` shrinks every shape (32x32 inputs, narrow spaces, batches of 4-8, 2 timed
steps) so CI runs it in seconds and the script cannot rot. Run on a GPU machine with::

    bash scripts/gpu_check.sh --out gpu_check.json        # about 11 minutes on one H200
    bash scripts/gpu_check.sh --only meta_step,profile --out gpu_check.json   # a minute or two
    bash scripts/gpu_check.sh --only masked_check,masked_step,masked_eval,latency_graphs --out gpu_check_29.json
"""
from __future__ import annotations

import argparse
import itertools
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pruningnet import build_model, get_space, make_spec  # noqa: E402
from pruningnet.bn import recalibrate_bn  # noqa: E402
from pruningnet.hypernet import PruningNet  # noqa: E402
from pruningnet.masked import MaskedEvaluator, MaskedPruningNet, capture  # noqa: E402

from metaprune.latency import TimingConfig, build_table  # noqa: E402
from metaprune.process.precision import Precision  # noqa: E402


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _times_ms(fn, dev: torch.device, warmup: int, steps: int) -> list[float]:
    for _ in range(warmup):
        fn()
    _sync(dev)
    out = []
    for _ in range(steps):
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _sgd(params) -> torch.optim.SGD:
    """SGD as meta-training builds it (fused where torch has the kernel; ``meta_train._optimizer``)."""
    params = list(params)
    try:
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=4e-5, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=4e-5)


def _vector(space, rng: random.Random) -> dict[str, int]:
    return {u.name: rng.choice(u.choices) for u in space.units}


def _batch(n: int, size: int, classes: int, dev: torch.device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, size, size, generator=g).to(dev)
    return x, torch.randint(0, classes, (n,), generator=g).to(dev)


def meta_step(space, batch: int, size: int, dev, warmup: int, steps: int, pool: int = 4) -> dict:
    """PruningNet step vs the static max network's step at the same batch.

    ``meta_ms``: a new random vector every step (every conv a shape not seen before: per-shape work of
    the backend, e.g. cuDNN's plan choice, is paid each step, as early in meta-training), channels-last
    input and the library's defaults, as meta-training runs. ``meta_pool_ms``: the same cycling through
    ``pool`` vectors after one warm-up pass over each (shapes seen before, as late in a long
    meta-training, once the backend's per-shape caches hold most shapes). ``meta_nchw_conv_ms``: NCHW
    input, every 1x1 conv a conv (the version before issue 17's pointwise products);
    ``meta_matmul_ms``: channels-last, every 1x1 conv a matrix product on this device, whatever its
    size (on a GPU the figure that decides whether ``POINTWISE_MATMUL_DEVICES`` should list it).
    ``static_ms`` / ``static_cl_ms``: the static max network, NCHW / channels-last.
    """
    from pruningnet import hypernet

    torch.manual_seed(0)
    net = PruningNet(space).to(dev).train()
    opt = _sgd(net.parameters())
    x, y = _batch(batch, size, space.options["num_classes"], dev)
    xcl = x.contiguous(memory_format=torch.channels_last)
    rng = random.Random(0)
    seen = itertools.cycle([_vector(space, rng) for _ in range(pool)])

    def meta(ch=None, inp=xcl) -> None:
        loss = F.cross_entropy(net(inp, ch or _vector(space, rng)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    default, max_elements = hypernet.POINTWISE_MATMUL_DEVICES, hypernet.POINTWISE_MATMUL_MAX_ELEMENTS
    meta_ms = _times_ms(meta, dev, warmup, steps)
    pool_ms = _times_ms(lambda: meta(next(seen)), dev, pool, steps)
    try:
        hypernet.POINTWISE_MATMUL_DEVICES = ()
        nchw_conv_ms = _times_ms(lambda: meta(inp=x), dev, warmup, steps)
        hypernet.POINTWISE_MATMUL_DEVICES, hypernet.POINTWISE_MATMUL_MAX_ELEMENTS = (dev.type,), float("inf")
        matmul_ms = _times_ms(meta, dev, warmup, steps)
    finally:
        hypernet.POINTWISE_MATMUL_DEVICES, hypernet.POINTWISE_MATMUL_MAX_ELEMENTS = default, max_elements
    gen_params = sum(p.numel() for p in net.parameters())
    del net, opt
    static = build_model(make_spec(space, space.max_channels())).to(dev).train()
    sopt = _sgd(static.parameters())

    def plain(inp=x) -> None:
        loss = F.cross_entropy(static(inp), y)
        sopt.zero_grad(set_to_none=True)
        loss.backward()
        sopt.step()

    static_ms = _times_ms(plain, dev, warmup, steps)
    static.to(memory_format=torch.channels_last)
    sopt = _sgd(static.parameters())  # fused SGD walks momentum by pointer: buffers in the new layout
    static_cl_ms = _times_ms(lambda: plain(xcl), dev, warmup, steps)
    m, s = statistics.median(meta_ms), statistics.median(static_ms)
    mp = statistics.median(pool_ms)
    med = {k: round(statistics.median(v), 2) for k, v in (("meta_nchw_conv_ms", nchw_conv_ms),
                                                          ("meta_matmul_ms", matmul_ms),
                                                          ("static_cl_ms", static_cl_ms))}
    return {"batch": batch, "input": size, "meta_ms": round(m, 2), "static_ms": round(s, 2),
            "ratio": round(m / s, 3), "meta_pool_ms": round(mp, 2), "ratio_pool": round(mp / s, 3),
            **med, "ratio_vs_static_cl": round(m / med["static_cl_ms"], 3),
            "pool": pool, "generator_params": gen_params}


def resnet50_memory(space, batch: int, size: int, dev) -> dict:
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
    torch.manual_seed(0)
    net = PruningNet(space).to(dev).train()
    opt = _sgd(net.parameters())
    x, y = _batch(batch, size, space.options["num_classes"], dev)
    t0 = time.perf_counter()
    loss = F.cross_entropy(net(x, space.max_channels()), y)
    loss.backward()
    opt.step()
    _sync(dev)
    out = {"batch": batch, "input": size, "generator_params": sum(p.numel() for p in net.parameters()),
           "step_s": round(time.perf_counter() - t0, 3)}
    if dev.type == "cuda":
        out["peak_device_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    del net, opt
    return out


def candidate_eval(space, size: int, dev, candidates: int, bn_batches: int = 5, bn_batch: int = 16,
                   val_images: int = 64) -> dict:
    """The MetaPruning protocol per candidate: generate, re-estimate BN, score ``val_images``."""
    torch.manual_seed(0)
    net = PruningNet(space).to(dev).eval()
    classes = space.options["num_classes"]
    bn = [_batch(bn_batch, size, classes, dev, seed=i)[0] for i in range(bn_batches)]
    xv, yv = _batch(val_images, size, classes, dev, seed=99)
    rng = random.Random(1)
    times, parts = [], []
    for _ in range(candidates):
        ch = _vector(space, rng)
        _sync(dev)
        t0 = time.perf_counter()
        model = net.generate(ch)
        _sync(dev)
        t1 = time.perf_counter()
        recalibrate_bn(model, bn)
        _sync(dev)
        t2 = time.perf_counter()
        with torch.no_grad():
            (model.eval()(xv).argmax(1) == yv).float().mean().item()
        t3 = time.perf_counter()
        times.append(t3 - t0)
        parts.append((t1 - t0, t2 - t1, t3 - t2))
    med = statistics.median(times)
    return {"candidates": candidates, "input": size, "median_s": round(med, 4), "min_s": round(min(times), 4),
            "max_s": round(max(times), 4), "spread": round((max(times) - min(times)) / med, 3),
            "median_generate_s": round(statistics.median(p[0] for p in parts), 4),
            "median_bn_s": round(statistics.median(p[1] for p in parts), 4),
            "median_score_s": round(statistics.median(p[2] for p in parts), 4)}


def scratch_throughput(space, batch: int, size: int, dev, warmup: int, steps: int) -> dict:
    """Images/s of scratch-training steps in each precision / memory-format mode."""
    old_benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = dev.type == "cuda"  # as scratch training sets it; restored below
    out = {}
    modes = [("fp32", False), ("bf16", False), ("fp32", True), ("bf16", True)]
    for precision, channels_last in modes:
        prec = Precision(dev, precision, channels_last)
        torch.manual_seed(0)
        model = prec.model(build_model(make_spec(space, space.max_channels())).to(dev).train())
        opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        x, y = _batch(batch, size, space.options["num_classes"], dev)
        x = prec.input(x)

        def step() -> None:
            with prec.autocast():
                loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            prec.backward_step(loss, opt)

        ms = statistics.median(_times_ms(step, dev, warmup, steps))
        out[f"{precision}{'+channels_last' if channels_last else ''}"] = round(batch / ms * 1e3, 1)
    torch.backends.cudnn.benchmark = old_benchmark  # later sections time new shapes: no autotuning there
    return {"batch": batch, "input": size, "images_per_s": out}


def latency_mape(space, dev, batch: int, vectors: int, grid_step: int, timing: TimingConfig,
                 rounds: int, tmp: Path) -> dict:
    """Build a table on ``dev`` and compare its predictions with end-to-end timings of built models
    (``bench_latency.py``'s vectors, interleaved rounds and MAPE)."""
    import numpy as np
    from bench_latency import mape_of, measure_rounds, random_vectors, round_spread_pct

    t0 = time.perf_counter()
    table = build_table(space, device=dev.type, batch_size=batch, grid_step=grid_step, timing=timing,
                        path=tmp / f"latency_{space.name}_b{batch}.json")
    build_s = time.perf_counter() - t0
    X = random_vectors(space, vectors, 0)
    ms = measure_rounds(space, X, table, rounds, dev.type, batch)
    measured = np.median(ms, axis=0)
    m = mape_of(table, space, X, measured)
    return {"batch": batch, "input": space.options["input_size"], "grid_step": grid_step, "vectors": vectors,
            "build_s": round(build_s, 1), "entries": len(table.entries),
            **{k: m[k] for k in ("mape_pct", "bias_pct", "max_abs_pct")},
            "mape_sum_of_entries_alone_pct": m["mape_without_calibration_pct"],
            "overhead_ms": round(float(m["overhead_ms"]), 4),
            "measured_ms_range": [round(float(measured.min()), 3), round(float(measured.max()), 3)],
            "round_spread_pct": round_spread_pct(ms)}


def meta_train_cli(dev, amp: str, max_steps: int | None, tmp: Path) -> dict:
    """``python -m metaprune train-pruningnet`` on the smoke config, generated data, this device."""
    import subprocess

    run_dir = tmp / f"meta_{amp}"
    cmd = [sys.executable, "-m", "metaprune", "train-pruningnet", "-c", str(REPO / "configs" / "smoke.yaml"),
           "--set", "data.name=synthetic", "--set", f"train.device={dev.type}", "--set", f"train.amp={amp}",
           "--run-dir", str(run_dir), "--quiet"]
    if max_steps:
        cmd += ["--set", f"train.max_steps={max_steps}"]
    env = {**__import__("os").environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = {"amp": amp, "returncode": proc.returncode, "wall_s": round(time.perf_counter() - t0, 1),
           "tail": (proc.stdout + proc.stderr).strip().splitlines()[-6:]}
    status = run_dir / "status.json"
    if status.is_file():
        doc = json.loads(status.read_text())
        out.update({k: doc.get(k) for k in ("step", "state", "device", "wall_s", "loss_spikes") if k in doc})
    metrics = run_dir / "metrics.jsonl"
    if metrics.is_file():
        rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
        out["last_metrics"] = next((r for r in reversed(rows) if "loss" in r and "event" not in r), None)
    out["pruningnet_written"] = (run_dir / "pruningnet.pt").is_file()
    return out


def profile_meta_step(space, batch: int, size: int, dev, steps: int = 3) -> dict:
    """Where a PruningNet step's time goes: ``torch.profiler`` over ``steps`` steps (after a warm-up),
    the top operators by host time and by device time, and the number of kernel launches per step."""
    from torch.profiler import ProfilerActivity, profile

    torch.manual_seed(0)
    net = PruningNet(space).to(dev).train()
    opt = _sgd(net.parameters())
    x, y = _batch(batch, size, space.options["num_classes"], dev)
    x = x.contiguous(memory_format=torch.channels_last)  # as meta-training feeds it
    rng = random.Random(0)

    def step() -> None:
        loss = F.cross_entropy(net(x, _vector(space, rng)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    _sync(dev)
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    t0 = time.perf_counter()
    with profile(activities=acts) as prof:
        for _ in range(steps):
            step()
        _sync(dev)
    wall_ms = (time.perf_counter() - t0) * 1e3 / steps
    ev = prof.key_averages()
    launches = sum(e.count for e in ev if e.key in ("cudaLaunchKernel", "cuLaunchKernel", "cudaLaunchKernelExC"))

    def top(attr: str) -> list:
        rows = sorted(ev, key=lambda e: getattr(e, attr, 0), reverse=True)[:15]
        return [[e.key, e.count // steps, round(getattr(e, attr, 0) / 1e3 / steps, 3)] for e in rows]

    dev_attr = "self_device_time_total" if dev.type == "cuda" else "self_cpu_time_total"
    return {"batch": batch, "steps": steps, "wall_ms_per_step": round(wall_ms, 2),
            "kernel_launches_per_step": launches // steps,
            "top_self_host_ms_per_step": top("self_cpu_time_total"),
            "top_self_device_ms_per_step": top(dev_attr)}


def masked_check(space, batch: int, size: int, dev) -> dict:
    """Masked against sliced on one random vector: logits and generator gradients (float32, TF32 off).

    Logits agree to rounding; float32 gradients of small batches at 32 px differ by a few percent of
    the largest, as sliced float32 differs from sliced float64 (BN's batch statistics amplify rounding;
    tests/test_masked.py shows both modes equal to 1e-10 in float64)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        torch.manual_seed(0)
        net = PruningNet(space).to(dev).train()
        masked = MaskedPruningNet(net)
        for m in list(net.modules()) + list(masked.modules()):
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        x, _ = _batch(batch, size, space.options["num_classes"], dev)
        ch = _vector(space, random.Random(3))
        params = list(net.parameters())
        a = net(x, ch)
        ga = torch.autograd.grad(a.square().sum(), params, allow_unused=True)
        b = masked(x, ch)
        gb = torch.autograd.grad(b.square().sum(), params, allow_unused=True)
        scale = max(float(g.abs().max()) for g in ga if g is not None)
        grad_diff = max(float((p - q).abs().max()) for p, q in zip(ga, gb) if p is not None)
        return {"batch": batch, "input": size, "logits_max_abs_diff": float((a - b).abs().max()),
                "logits_max_abs": float(a.abs().max()), "grad_max_abs_diff": grad_diff, "grad_max_abs": scale,
                "grad_rel_diff": grad_diff / scale}
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32


def masked_step(space, batch: int, size: int, dev, warmup: int, steps: int) -> dict:
    """Step times (median ms) of the masked PruningNet, eager and captured, against the sliced step
    and the static max network's (channels-last input, new random vector every step, fp32)."""
    torch.manual_seed(0)
    net = PruningNet(space).to(dev).train()
    masked = MaskedPruningNet(net)
    opt = _sgd(net.parameters())
    x, y = _batch(batch, size, space.options["num_classes"], dev)
    xcl = x.contiguous(memory_format=torch.channels_last)
    rng = random.Random(0)

    def step(fwd) -> None:
        loss = F.cross_entropy(fwd(_vector(space, rng)), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    out = {"batch": batch, "input": size}
    times = {"sliced_ms": _times_ms(lambda: step(lambda ch: net(xcl, ch)), dev, warmup, steps),
             "masked_ms": _times_ms(lambda: step(lambda ch: masked(xcl, ch)), dev, warmup, steps)}
    for how in ("graphs", "compile"):
        if dev.type != "cuda":
            out[f"masked_{how}"] = "skipped: capture needs CUDA"
            continue
        try:
            t0 = time.perf_counter()
            fn = capture(masked, xcl, masked.pack(_vector(space, rng), dev), how)
            step(lambda ch: fn(xcl, masked.pack(ch, dev)))  # the first call compiles (compile mode)
            _sync(dev)
            out[f"masked_{how}_capture_s"] = round(time.perf_counter() - t0, 2)
            probe = masked.pack(_vector(space, rng), dev)  # the replay must compute the eager forward
            with torch.no_grad():
                eager, replay = masked.forward_packed(xcl, probe), fn(xcl, probe)
            out[f"masked_{how}_rel_diff"] = float((replay - eager).abs().max() / eager.abs().max().clamp_min(1e-12))
            times[f"masked_{how}_ms"] = _times_ms(lambda: step(lambda ch: fn(xcl, masked.pack(ch, dev))), dev,
                                                  warmup, steps)
        except Exception as e:  # noqa: BLE001 - one capture mode failing must not lose the others
            out[f"masked_{how}"] = f"error: {type(e).__name__}: {e}"
    del net, masked, opt
    static = build_model(make_spec(space, space.max_channels())).to(dev).train().to(memory_format=torch.channels_last)
    sopt = _sgd(static.parameters())

    def plain() -> None:
        loss = F.cross_entropy(static(xcl), y)
        sopt.zero_grad(set_to_none=True)
        loss.backward()
        sopt.step()

    times["static_cl_ms"] = _times_ms(plain, dev, warmup, steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    s = med["static_cl_ms"]
    out.update({k: round(v, 2) for k, v in med.items()})
    out.update({f"ratio_{k[:-3]}": round(v / s, 3) for k, v in med.items() if k != "static_cl_ms"})
    return out


def masked_eval(space, size: int, dev, candidates: int, bn_batches: int = 5, bn_batch: int = 16,
                val_images: int = 64) -> dict:
    """``candidate_eval``'s protocol per candidate in masked mode (generate, re-estimate BN, score),
    the sliced one on the same candidates, and how far the two modes' top-1 differ."""
    torch.manual_seed(0)
    net = PruningNet(space).to(dev).eval()
    classes = space.options["num_classes"]
    bn = [_batch(bn_batch, size, classes, dev, seed=i)[0] for i in range(bn_batches)]
    xv, yv = _batch(val_images, size, classes, dev, seed=99)
    ev = MaskedEvaluator(net)
    rng = random.Random(1)
    vectors = [_vector(space, rng) for _ in range(candidates + 1)]  # the first one warms up

    def masked_one(ch) -> float:
        ev.prepare(ch)
        ev.calibrate(bn)
        return float((ev(xv).argmax(1) == yv).float().mean())

    def sliced_one(ch) -> float:
        model = recalibrate_bn(net.generate(ch), bn)
        with torch.no_grad():
            return float((model.eval()(xv).argmax(1) == yv).float().mean())

    out = {"candidates": candidates, "input": size}
    diffs = []
    for name, fn in (("masked", masked_one), ("sliced", sliced_one)):
        times, scores = [], []
        fn(vectors[0])
        for ch in vectors[1:]:
            _sync(dev)
            t0 = time.perf_counter()
            scores.append(fn(ch))
            _sync(dev)
            times.append(time.perf_counter() - t0)
        med = statistics.median(times)
        out[name] = {"median_s": round(med, 4), "min_s": round(min(times), 4), "max_s": round(max(times), 4),
                     "spread": round((max(times) - min(times)) / med, 3)}
        diffs.append(scores)
    out["top1_max_abs_diff"] = max(abs(a - b) for a, b in zip(*diffs))
    return out


def latency_graphs(space, dev, batches, vectors: int, grid_step: int, timing: TimingConfig, rounds: int,
                   tmp: Path) -> list:
    """``latency_mape`` per batch size, timed as CUDA graph replays and eagerly (CUDA), or once (CPU)."""
    from dataclasses import replace

    modes = (("graphs", True), ("eager", False)) if dev.type == "cuda" else (("cpu", False),)
    rows = []
    for b in batches:
        for name, graphs in modes:
            sub = tmp / f"{name}_b{b}"
            sub.mkdir(exist_ok=True)
            rows.append({"timing": name, **latency_mape(space, dev, b, vectors, grid_step,
                                                        replace(timing, cuda_graphs=graphs), rounds, sub)})
    return rows


def _section(report: dict, name: str, out: Path, fn) -> None:
    if report["only"] and name not in report["only"]:
        return
    t0 = time.perf_counter()
    try:
        report[name] = fn()
    except Exception as e:  # noqa: BLE001 - one broken section must not lose the others' figures
        report[name] = {"error": f"{type(e).__name__}: {e}"}
    report.setdefault("section_s", {})[name] = round(time.perf_counter() - t0, 1)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"[gpu_check] {name} done in {report['section_s'][name]} s", flush=True)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default) or cpu")
    ap.add_argument("--quick", action="store_true", help="tiny shapes and 2 timed steps (CI)")
    ap.add_argument("--out", default="gpu_check.json")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--only", default="", help="comma-separated sections to run (default: all but profile)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("gpu_check: --device cuda but torch sees no GPU; use --device cpu --quick")
    t0 = time.time()
    if args.quick:
        size, batches, warmup, steps, cands, scratch_batch = 32, (4, 8), 1, 2, 2, 8
        mbv2 = get_space("mobilenet_v2", input_size=size, small_input=True, num_classes=10, width_mult=0.35)
        r50 = get_space("resnet50", input_size=size, small_input=True, num_classes=10, width_mult=0.125)
        lat_spaces, lat_batches, lat_vectors, lat_step = [("mobilenet_v2", mbv2)], (1,), 2, 16
        lat_timing, train_steps = TimingConfig(warmup=1, repeats=1, min_sample_ms=0.05), 2
    else:
        size, batches, warmup, steps, cands, scratch_batch = 224, (64, 256), 3, 10, 20, 256
        mbv2, r50 = get_space("mobilenet_v2", width_mult=1.4), get_space("resnet50")
        lat_spaces = [("mobilenet_v2-1.4", mbv2), ("mobilenet_v3_small", get_space("mobilenet_v3_small"))]
        lat_batches, lat_vectors, lat_step = (1, 32), 20, 3
        lat_timing, train_steps = TimingConfig(), None
    amps = ("auto", "fp16") if dev.type == "cuda" else ("auto",)
    report: dict = {"device": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor()
                    or platform.machine(), "torch": torch.__version__, "quick": args.quick,
                    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "only": [n for n in args.only.split(",") if n]}
    out = Path(args.out)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp_:
        tmp = Path(tmp_)
        _section(report, "meta_step", out, lambda: [meta_step(mbv2, b, size, dev, warmup, steps) for b in batches])
        _section(report, "resnet50_memory", out, lambda: resnet50_memory(r50, batches[0], size, dev))
        _section(report, "candidate_eval", out, lambda: candidate_eval(mbv2, size, dev, cands))
        _section(report, "scratch", out, lambda: scratch_throughput(mbv2, scratch_batch, size, dev, warmup, steps))
        _section(report, "latency", out, lambda: [{"space": name, **latency_mape(sp, dev, b, lat_vectors, lat_step,
                                                                                  lat_timing, 3, tmp)}
                                                  for name, sp in lat_spaces for b in lat_batches])
        _section(report, "masked_check", out, lambda: masked_check(mbv2, batches[0], size, dev))
        # quick: one batch, and a space of two choices per unit for the table (correctness, not figures)
        _section(report, "masked_step", out, lambda: [masked_step(mbv2, b, size, dev, warmup, steps)
                                                      for b in (batches[:1] if args.quick else batches)])
        _section(report, "masked_eval", out, lambda: masked_eval(mbv2, size, dev, cands))
        lat_space = (get_space("mobilenet_v2", input_size=size, small_input=True, num_classes=10, width_mult=0.35,
                               ratios=[0.5, 1.0]) if args.quick else mbv2)
        _section(report, "latency_graphs", out, lambda: latency_graphs(lat_space, dev, lat_batches, lat_vectors,
                                                                       lat_step, lat_timing, 3, tmp))
        _section(report, "meta_train_cli", out, lambda: [meta_train_cli(dev, amp, train_steps, tmp)
                                                         for amp in amps])
        if report["only"]:  # on request only: the profiler's own overhead is not a figure
            _section(report, "profile", out, lambda: profile_meta_step(mbv2, batches[0], size, dev))
    report["wall_s"] = round(time.time() - t0, 1)
    report["imported"] = sorted(m for m in ("ray", "deap", "yaml") if m in sys.modules)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return report


if __name__ == "__main__":
    main()
