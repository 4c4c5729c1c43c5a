"""Meta-training a PruningNet: every batch trains a freshly sampled channel vector.

Deterministic given the seed: the data order of an epoch and the vector of a step derive from
``(seed, epoch)`` and ``(seed, step)``, so a run resumed from a checkpoint ends with the same
weights as an uninterrupted one.

Data parallel (``dist=(rank, world)``, a torch process group already up, e.g. by Ray Train in
:mod:`metaprune.metatrain.distributed`): every worker draws the same global batch and the same vector, trains
on its ``rank::world`` share of the batch under DistributedDataParallel (gradients averaged, so a step
is the single-process step up to each share's BatchNorm statistics), and rank 0 alone writes
metrics, checkpoints and the PruningNet. ``train.batch_size`` is the global batch.
"""
from __future__ import annotations

import contextlib
import errno
import json
import math
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pruningnet.errors import UserError
from pruningnet.hypernet import PruningNet
from pruningnet.masked import MaskedPruningNet, capture, resolve_execution
from pruningnet.spaces import Space

from .divergence import DivergenceGuard
from ..store.fileio import atomic_save, load_weights, open_regular, remove_stale_temps, write_json, write_text
from ..process.malloc import steady_allocator
from ..store.runs import PRUNINGNET_FILE, Run
from ..store.schemas import CHECKPOINT as CHECKPOINT_KIND
from ..process.threads import set_torch_threads

CHECKPOINT = "checkpoints/last.pt"


class TrainingDiverged(UserError):
    """The loss became NaN or inf; the last good checkpoint is left as it was."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"train.device={name!r} but no CUDA device is available; accepted here: auto, cpu")
    return torch.device(name)


def sample_vectors(space: Space, rng: np.random.Generator, sampling: str, *, seed: int = 0,
                   step: int = 0) -> list[dict[str, int]]:
    """One uniform random vector, (sandwich rule) the max, the min and one random vector, or (fair)
    step ``step``'s vector of :func:`fair_vector` (``rng`` unused)."""
    if sampling == "fair":
        return [fair_vector(space, seed, step)]
    rand = {u.name: int(u.choices[rng.integers(len(u.choices))]) for u in space.units}
    if sampling == "sandwich":
        return [space.max_channels(), space.min_channels(), rand]
    return [rand]


_FAIR_STREAM = 0xFA1  # keeps fair sampling's draws apart from the other (seed, step) streams


def fair_vector(space: Space, seed: int, step: int) -> dict[str, int]:
    """FairNAS-style fair sampling: unit ``i`` with ``n`` choices takes, at ``step``, position
    ``step % n`` of a permutation of its choices drawn from ``(seed, i, step // n)``, so every ``n``
    consecutive steps (from step 0) train each of its choices exactly once, and the vector of a step
    depends only on ``(seed, step)`` (a resumed run draws what an uninterrupted one would). Units are
    shuffled independently, so the vectors themselves still vary."""
    out = {}
    for i, u in enumerate(space.units):
        n = len(u.choices)
        cycle, pos = divmod(step, n)
        perm = np.random.default_rng([_FAIR_STREAM, seed, i, cycle]).permutation(n)
        out[u.name] = int(u.choices[perm[pos]])
    return out


def step_losses(forward, x: torch.Tensor, y: torch.Tensor, vectors: list[dict[str, int]], tc,
                autocast=contextlib.nullcontext):
    """Yield ``(loss, logits)`` for each vector of a step, in order, one at a time (the caller runs
    each backward before the next forward, so one graph is alive at a time).

    Cross-entropy on the labels (with ``tc.label_smoothing``); with ``tc.distill == "inplace"`` only
    the first vector (the sandwich's max) learns from the labels and every later one from the first's
    detached softmax (soft cross-entropy: ``-sum(p_max * log_softmax(logits))``, no smoothing), as in
    slimmable networks' in-place distillation."""
    teacher = None
    for ch in vectors:
        with autocast():
            logits = forward(x, ch)
            if teacher is None:
                loss = F.cross_entropy(logits, y, label_smoothing=tc.label_smoothing)
            else:
                loss = F.cross_entropy(logits.float(), teacher)
        if tc.distill == "inplace" and teacher is None:
            teacher = logits.detach().float().softmax(dim=1)
        yield loss, logits


def _lr_lambda(total: int, warmup: int, schedule: str):
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(t, 1.0))) if schedule == "cosine" else max(0.0, 1 - t)
    return f


def _check_finite(run: Run, net, step: int) -> None:
    """Every rank runs it (their weights are equal), so all stop together."""
    bad = [k for k, v in net.state_dict().items() if not bool(torch.isfinite(v).all())]
    if bad:
        raise TrainingDiverged(f"{len(bad)} weight tensors are not finite at step {step} (first: {bad[0]}); "
                               f"not checkpointed, last good checkpoint kept at {run.path / CHECKPOINT}. "
                               f"Lower train.lr (now {run.config.train.lr})")


def _save_checkpoint(run: Run, net, opt, sched, step: int, guard: DivergenceGuard, scaler=None) -> None:
    """Rank 0's checkpoint write; weights that are not finite are never written."""
    _check_finite(run, net, step)
    state = {"net": net.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(), "step": step,
             "guard": guard.state_dict()}
    if scaler is not None and scaler.is_enabled():  # fp16 on CUDA: the loss scale it reached resumes with the run
        state["scaler"] = scaler.state_dict()
    atomic_save(run.path / CHECKPOINT, state)


def _read_metrics(path: Path) -> str:
    """The metrics log's text (a torn last line decodes with replacement characters)."""
    with os.fdopen(open_regular(path, "metrics log", follow=False), "rb") as f:
        return f.read().decode("utf-8", errors="replace")


def _open_metrics(path: Path):
    """``metrics.jsonl`` opened for appending: a regular file or none yet (a FIFO would block)."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                     0o644)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENXIO, errno.EISDIR):
            raise
        fd = None
    if fd is None or not stat.S_ISREG(os.fstat(fd).st_mode):
        if fd is not None:
            os.close(fd)
        raise UserError(f"metrics log {str(path)!r} is not a regular file; accepted: a file metaprune writes")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "a")


def _trim_metrics(path: Path, step: int) -> None:
    """Drop metric lines logged after the checkpoint we resume from."""
    if not os.path.lexists(path):
        return
    keep = []
    for ln in _read_metrics(path).splitlines():
        try:
            if json.loads(ln)["step"] <= step:
                keep.append(ln)
        except (ValueError, KeyError, TypeError):
            continue  # a line torn by a kill mid-write: the step is replayed and logged again
    write_text(path, "".join(ln + "\n" for ln in keep))


def _report_spike(metrics_f, bar, step: int, loss: float, lr: float, spike: dict, base_lr: float) -> None:
    """A loss far above its running minimum: one warning line and a ``loss_spike`` metrics event."""
    metrics_f.write(json.dumps({"step": step, "event": "loss_spike", "loss": round(loss, 5), **spike,
                                "lr": lr}) + "\n")
    metrics_f.flush()
    bar.write(f"metaprune: warning: loss spike at step {step}: smoothed loss {spike['loss_ema']:.3f} "
              f"is over {spike['loss_ema'] / spike['running_min']:.1f}x its running minimum "
              f"{spike['running_min']:.3f} (lr {lr:.4g}); if it does not come back down, meta-training "
              f"is diverging: lower train.lr (now {base_lr}) or raise train.warmup_steps",
              file=sys.stderr)


def resolve_capture(setting: str, device: torch.device, execution: str, world: int) -> str:
    """``off``, ``graphs`` or ``compile`` for ``train.capture``; refuses capture where it cannot run."""
    if setting == "auto":  # opt-in until a GPU measurement shows the captured step equal and faster
        return "off"
    if setting != "off" and (device.type != "cuda" or execution != "masked" or world > 1):
        raise UserError(f"train.capture={setting!r} needs train.execution masked on one CUDA device (here: "
                        f"{execution} on {device.type}, {world} worker(s)); accepted here: off or auto")
    return setting


def check_trainable(cfg, data, space: Space | None = None) -> None:
    """Refuse a config that cannot train on ``data`` (device, batch size, execution) before a run is
    written."""
    device = resolve_device(cfg.train.device)
    if space is not None:
        try:
            execution = resolve_execution(cfg.train.execution, device, space)
        except ValueError as e:
            raise UserError(f"train.{e}") from None
        resolve_capture(cfg.train.capture, device, execution, 1)
    if len(data.train) // cfg.train.batch_size < 1:
        raise UserError(f"train.batch_size={cfg.train.batch_size} is larger than the training split "
                        f"({len(data.train)} images); accepted: at most {len(data.train)}")


def meta_train(run: Run, data, progress: bool = True, dist: tuple[int, int] | None = None,
               device: torch.device | None = None) -> dict:
    """Meta-train (or resume) the run's PruningNet; writes checkpoints, metrics and the final net.
    ``dist``: ``(rank, world_size)`` of a data-parallel run (see the module docstring)."""
    cfg, tc = run.config, run.config.train
    rank, world = dist or (0, 1)
    lead = rank == 0
    device = device or resolve_device(tc.device)
    if world > 1 and tc.batch_size % world:
        raise UserError(f"train.batch_size={tc.batch_size} is the global batch of {world} workers; accepted: "
                        f"a multiple of {world}")
    set_torch_threads(tc.threads)
    steady_allocator()  # no fresh pages per step (metaprune/process/malloc.py)
    use_cuda = device.type == "cuda"
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(
        tc.amp, torch.bfloat16 if (tc.amp == "auto" and use_cuda) else None)
    channels_last = tc.channels_last != "off"  # auto: on (meta_config.py)

    torch.manual_seed(cfg.seed)
    net = PruningNet(run.space, hidden=cfg.model.hidden, generator_input=cfg.model.generator_input).to(device)
    opt = _optimizer(net, tc)
    steps_per_epoch = len(data.train) // tc.batch_size
    check_trainable(cfg, data, run.space)  # also checked before a new run is written
    execution = resolve_execution(tc.execution, device, run.space)
    how = resolve_capture(tc.capture, device, execution, world)
    model = MaskedPruningNet(net) if execution == "masked" else net  # shares net's parameters
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    step_fn = _StepForward(model, how, amp_dtype) if execution == "masked" else None
    forward = step_fn if step_fn is not None else model

    def autocast():
        return torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None)

    total = tc.epochs * steps_per_epoch
    if tc.max_steps:
        total = min(total, tc.max_steps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(total, tc.warmup_steps, tc.schedule))
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype is torch.float16 and use_cuda)

    step = 0
    if lead:  # (not on other ranks: they would delete rank 0's file while it is being written)
        remove_stale_temps(run.path / "checkpoints")  # a kill -9 during a checkpoint write leaves one
        remove_stale_temps(run.path)
    guard = DivergenceGuard(factor=tc.spike_factor)
    ckpt = run.path / CHECKPOINT
    if os.path.lexists(ckpt):  # everything in it is checked before anything is written
        state = CHECKPOINT_KIND.check(load_weights(ckpt, "meta-training checkpoint", map_location=device,
                                                   follow=False), ckpt)
        if state["step"] > total:
            raise UserError(f"meta-training checkpoint {str(ckpt)!r} is damaged: step={state['step']} is not "
                            f"accepted (accepted: an integer in [0, {total}], this run's steps); delete it to "
                            "restart meta-training from step 0")
        try:
            net.load_state_dict(state["net"])
            _load_optimizer_state(opt, state["opt"])
            sched.load_state_dict(state["sched"])
            step = state["step"]
            if "guard" in state:
                guard.load_state_dict(state["guard"])
            if scaler.is_enabled() and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError, IndexError):
            raise UserError(f"meta-training checkpoint {str(ckpt)!r} does not fit this run (damaged or "
                            "from another config); delete it to restart meta-training from step 0") from None
        if lead:
            _trim_metrics(run.path / "metrics.jsonl", step)
    saved_step = step  # the step the checkpoint on disk holds
    metrics_f = _open_metrics(run.path / "metrics.jsonl") if lead else open(os.devnull, "w")
    if lead:
        write_json(run.path / "status.json", {"state": "running", "step": step, "total_steps": total,
                                              "workers": world})

    from tqdm import tqdm

    bar = tqdm(total=total, initial=step, disable=not (progress and lead), unit="step", dynamic_ncols=True)
    t_start, seen, last_log = time.time(), 0, time.time()
    net.train()
    try:
        while step < total:
            epoch = step // steps_per_epoch
            gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
            first = step - epoch * steps_per_epoch  # a resumed epoch skips what it trained on, undecoded
            batches = data.train.batches(tc.batch_size, shuffle=True, augment=tc.augment,
                                         generator=gen, drop_last=True, start=first)
            for i, (x, y) in enumerate(batches, start=first):
                if step >= total:
                    break
                if world > 1:
                    x, y = x[rank::world], y[rank::world]  # this worker's share of the global batch
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                torch.manual_seed(cfg.seed * 7_919 + step)  # dropout
                vectors = sample_vectors(run.space, np.random.default_rng([cfg.seed, step]), tc.sampling,
                                         seed=cfg.seed, step=step)
                opt.zero_grad(set_to_none=True)
                loss_sum, correct = 0.0, 0
                for loss, logits in step_losses(forward, x, y, vectors, tc, autocast):
                    if not _finite_everywhere(loss, world):
                        raise TrainingDiverged(
                            f"loss is {loss.item()} at step {step}; stopped, last good checkpoint kept "
                            f"at {ckpt}. Lower train.lr (now {tc.lr}) or check the data")
                    scaler.scale(loss / len(vectors)).backward()
                    loss_sum += loss.item() / len(vectors)
                    correct = int((logits.argmax(1) == y).sum())
                if world > 1:  # the global batch's loss and hits, identical on every rank (the guard's input)
                    loss_sum, correct = _mean_over_workers(loss_sum, correct, world, device)
                if tc.grad_clip:
                    scaler.unscale_(opt)
                    torch.nn.utils.clip_grad_norm_(net.parameters(), tc.grad_clip)
                scaler.step(opt)
                scaler.update()
                sched.step()
                step += 1
                seen += len(y) * world
                spike = guard.update(loss_sum)
                if spike is not None:
                    _report_spike(metrics_f, bar, step, loss_sum, sched.get_last_lr()[0], spike, tc.lr)
                ips = seen / max(time.time() - t_start, 1e-9)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_sum:.3f}", acc=f"{correct / (len(y) * world):.3f}", img_s=f"{ips:.0f}")
                if step % tc.log_every_steps == 0 or step == total:
                    now = time.time()
                    metrics_f.write(json.dumps({"step": step, "epoch": epoch, "loss": round(loss_sum, 5),
                                                "train_top1": correct / (len(y) * world), "lr": sched.get_last_lr()[0],
                                                "img_per_s": round(ips, 1),
                                                "wall_s": round(now - last_log, 3)}) + "\n")
                    metrics_f.flush()
                    last_log = now
                if step % tc.checkpoint_every_steps == 0 or step == total:
                    if lead:
                        _save_checkpoint(run, net, opt, sched, step, guard, scaler)
                        saved_step = step
                    else:
                        _check_finite(run, net, step)  # equal weights: every rank stops with rank 0
        metrics_f.close()  # a full disk shows here at the latest, inside the try
        status = {"state": "done", "step": step, "total_steps": total,
                  "wall_s": round(time.time() - t_start, 2), "device": str(device), "loss_spikes": guard.spikes,
                  "workers": world}
        if lead:
            atomic_save(run.path / PRUNINGNET_FILE, net.state_dict())
            write_json(run.path / "status.json", status)
    except KeyboardInterrupt:
        if lead:
            write_json(run.path / "status.json", {"state": "interrupted", "step": step, "total_steps": total,
                                                  "resume": f"metaprune train-pruningnet --resume {run.path}"})
        raise
    except OSError as e:  # a full disk, a quota, a directory made read-only under us
        raise _write_failed(run, e, step, saved_step, total, lead) from None
    finally:
        bar.close()
        with contextlib.suppress(OSError):
            metrics_f.close()
    return status


class _StepForward:
    """The masked forward of a step: ``(x, channels) -> logits``, captured on first use when ``how`` is
    ``graphs`` or ``compile`` (:func:`pruningnet.masked.capture`). A capture that fails falls back to
    the eager masked forward with one warning line (same values, no replay)."""

    def __init__(self, model, how: str, amp_dtype):
        self.model, self.how, self.amp_dtype, self.fn = model, how, amp_dtype, None
        self.masked = model.module if hasattr(model, "module") else model

    def __call__(self, x: torch.Tensor, channels) -> torch.Tensor:
        packed = self.masked.pack(channels, x.device)
        if self.how == "off":
            return self.model.forward_packed(x, packed) if self.model is self.masked else self.model(x, channels)
        if self.fn is None:
            try:
                # graphs record under autocast without its weight cache (make_graphed_callables requires it)
                with torch.autocast(x.device.type, dtype=self.amp_dtype or torch.float32,
                                    enabled=self.amp_dtype is not None, cache_enabled=False):
                    self.fn = capture(self.masked, x, packed, self.how)
            except Exception as e:  # noqa: BLE001 - an unsupported op must not stop meta-training
                print(f"metaprune: warning: train.capture={self.how} failed ({type(e).__name__}: {e}); "
                      "running the masked step without capture", file=sys.stderr)
                self.how, self.fn = "off", None
                return self(x, channels)
        return self.fn(x, packed)


class WriteFailed(UserError):
    """A run file could not be written (a full disk); the last checkpoint is left as it was."""


def _write_failed(run: Run, e: OSError, step: int, saved_step: int, total: int, lead: bool) -> WriteFailed:
    """Mark the run failed (if status.json can still be written) and say what is on disk."""
    where = f" {str(e.filename)!r}" if e.filename else ""
    reason = f"cannot write{where}: {e.strerror or e}"
    resume = f"metaprune train-pruningnet --resume {run.path}"
    if lead:
        with contextlib.suppress(OSError):
            write_json(run.path / "status.json", {"state": "failed", "reason": reason, "step": saved_step,
                                                  "total_steps": total, "resume": resume})
    kept = f"the checkpoint of step {saved_step} is intact" if saved_step else "no checkpoint was written yet"
    return WriteFailed(f"{reason}; meta-training stopped at step {step} and {kept}: free space and run "
                       f"`{resume}`")


def _finite_everywhere(loss: torch.Tensor, world: int) -> bool:
    """Whether the loss is finite on every worker (all stop together, none waits forever)."""
    ok = torch.isfinite(loss.detach()).float().reshape(1)  # on the loss's device (NCCL needs CUDA tensors)
    if world > 1:
        import torch.distributed as torch_dist

        torch_dist.all_reduce(ok, op=torch_dist.ReduceOp.MIN)
    return bool(ok.item())


_FUSED_DEVICES = ("cpu", "cuda")
_BUILD_FLAGS = ("fused", "foreach")


def _optimizer(net: torch.nn.Module, tc) -> torch.optim.Optimizer:
    """SGD with momentum (MetaPruning's) or AdamW, with torch's fused kernel where the device has one.

    The generators hold ~200M parameters for MobileNetV2-1.4 and every step updates all of them (the
    momentum of rows a vector did not use keeps moving, as in MetaPruning); fused, weight decay,
    momentum and the update are one pass over memory instead of three: the optimizer step of a batch-8
    step at 224 went from 0.22-0.26 s to 0.05-0.06 s on a 2-core AMD EPYC (BENCHMARKS.md, issue 17).
    """
    cls, kw = ((torch.optim.AdamW, {"weight_decay": tc.weight_decay}) if tc.optimizer == "adamw" else
               (torch.optim.SGD, {"momentum": tc.momentum, "nesterov": tc.nesterov, "weight_decay": tc.weight_decay}))
    params = list(net.parameters())
    groups = param_groups(net, tc)
    # torch checks a fused kernel's device only at the first step: use it where it is known to exist
    fused = all(p.device.type in _FUSED_DEVICES and p.dtype.is_floating_point for p in params)
    return cls(groups, lr=tc.lr, fused=True, **kw) if fused else cls(groups, lr=tc.lr, **kw)


def param_groups(net: torch.nn.Module, tc) -> list[dict]:
    """The optimizer's parameter groups: one (every parameter at ``train.weight_decay``), or, when
    ``train.generator_weight_decay`` differs from it, the generators (parameters under
    ``net.generators``: each layer's FC1 and the FC2 weight and bias that emit its weight) at
    ``generator_weight_decay`` and the rest (the shared biases) at ``weight_decay``."""
    gwd = getattr(tc, "generator_weight_decay", None)  # benchmarks pass only the optimizer's fields
    if gwd is None or gwd == tc.weight_decay:
        return [{"params": list(net.parameters())}]  # as before the option: old checkpoints load
    named = list(net.named_parameters())
    gen = [p for n, p in named if n.startswith("generators.")]
    rest = [p for n, p in named if not n.startswith("generators.")]
    return [g for g in ({"params": gen, "weight_decay": gwd}, {"params": rest}) if g["params"]]


def _load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """``opt.load_state_dict(state)`` keeping how ``opt`` was built (fused or not).

    Loading copies every param-group key, these flags too: a checkpoint written by a non-fused
    optimizer (before issue 17, or on another device) would turn the fused one off while it still
    tells GradScaler it unscales itself, and the first fp16 step would fail.
    """
    built = [{k: g[k] for k in _BUILD_FLAGS if k in g} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, flags in zip(opt.param_groups, built):
        group.update(flags)


def _mean_over_workers(loss: float, correct: int, world: int, device: torch.device) -> tuple[float, int]:
    import torch.distributed as torch_dist

    t = torch.tensor([loss, float(correct)], dtype=torch.float64, device=device)
    torch_dist.all_reduce(t)
    return float(t[0]) / world, int(t[1])


