"""A plain train/eval loop for one static network: SGD, label smoothing, warm-up then cosine.

Nothing here knows about Ray; the Tune trainable and the sequential benchmark both call :func:`fit`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from pruningnet import build_model, get_space, make_spec
from pruningnet.errors import UserError

from ..process.precision import Precision
from ..data import DataSplits
from ..evaluation import count_hits
from ..process.malloc import steady_allocator
from ..process.threads import set_torch_threads
from .recipe import Recipe


@dataclass
class ScratchData:
    """The two splits scratch training touches: it trains on ``train`` and measures ``test``."""

    name: str
    train: Any
    test: Any
    num_classes: int
    in_channels: int
    image_size: int


def scratch_data(splits: DataSplits, recipe: Recipe, seed: int) -> ScratchData:
    """``splits`` without the search split, cut to the recipe's image caps (a seeded subset)."""
    rng = np.random.default_rng(seed)

    def cap(split, n):
        if n is None or n >= len(split):
            return split
        return split.subset(np.sort(rng.choice(len(split), size=n, replace=False)))

    return ScratchData(splits.name, cap(splits.train, recipe.max_train_images),
                       cap(splits.test, recipe.max_test_images), splits.num_classes,
                       splits.in_channels, splits.image_size)


def check_fits(space_name: str, options: dict, data: ScratchData, what: str) -> None:
    """A spec's space must take the data's images and classes."""
    want = {"in_channels": data.in_channels, "input_size": data.image_size, "num_classes": data.num_classes}
    for key, value in want.items():
        if options.get(key) != value:
            raise UserError(f"{what} (space {space_name}) has {key}={options.get(key)} but data "
                            f"{data.name!r} has {value}; use a spec built for this data or set data.name")


def build_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.SGD:
    """SGD; weight decay on conv and linear weights only unless ``decay_norm_and_bias``."""
    decay, rest = [], []
    for p in model.parameters():
        (decay if p.ndim > 1 or recipe.decay_norm_and_bias else rest).append(p)
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum, nesterov=recipe.nesterov)


def lr_at(recipe: Recipe, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate before optimizer step ``step`` (0-based) of ``total_steps``."""
    warm = min(int(round(recipe.warmup_epochs * steps_per_epoch)), total_steps)
    if step < warm:
        return recipe.lr * (step + 1) / warm
    t = (step - warm) / max(1, total_steps - warm)
    if recipe.schedule == "linear":
        return recipe.min_lr + (recipe.lr - recipe.min_lr) * (1 - t)
    return recipe.min_lr + 0.5 * (recipe.lr - recipe.min_lr) * (1 + math.cos(math.pi * t))


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    return max(1, n_images // batch_size) if n_images >= batch_size else 1


def train_epoch(model: nn.Module, opt: torch.optim.Optimizer, data: ScratchData, recipe: Recipe,
                epoch: int, epochs: int, seed: int, device: torch.device, slimming: float = 0.0,
                precision: Precision | None = None) -> dict[str, float]:
    """One pass over ``data.train`` (shuffled with a generator seeded by ``seed`` and ``epoch``).

    ``slimming``: Network Slimming's L1 penalty on BN scales (Liu et al. 2017), added to their
    gradients after ``backward()`` and before ``step()``. ``precision``: autocast, loss scaling and
    memory format (default: fp32, contiguous)."""
    prec = precision or Precision(device)
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)] if slimming else []
    loss_fn = nn.CrossEntropyLoss(label_smoothing=recipe.label_smoothing)
    gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    spe = steps_per_epoch(len(data.train), recipe.batch_size)
    drop_last = len(data.train) >= recipe.batch_size
    total, correct, loss_sum = 0, 0, 0.0
    for i, (x, y) in enumerate(data.train.batches(recipe.batch_size, shuffle=True, augment=recipe.augment,
                                                  generator=gen, drop_last=drop_last, device=device)):
        lr = lr_at(recipe, epoch * spe + i, epochs * spe, spe)
        for group in opt.param_groups:
            group["lr"] = lr
        with prec.autocast():
            logits = model(prec.input(x))
            loss = loss_fn(logits, y)
        opt.zero_grad(set_to_none=True)

        def slim() -> None:
            for bn in bns:
                bn.weight.grad.add_(torch.sign(bn.weight.detach()), alpha=slimming)

        prec.backward_step(loss, opt, slim if bns else None)
        total += len(y)
        loss_sum += float(loss.detach()) * len(y)
        correct += int((logits.argmax(1) == y).sum())
    return {"train_loss": loss_sum / max(1, total), "train_top1": correct / max(1, total), "lr": lr}


@torch.no_grad()
def evaluate(model: nn.Module, split, batch_size: int, device: torch.device,
             precision: Precision | None = None) -> dict[str, float]:
    """Top-1 and top-5 accuracy (fractions in [0, 1], as the search reports them) and mean
    cross-entropy on ``split``."""
    prec = precision or Precision(device)
    model.eval()
    total, top1, top5, loss_sum = 0, 0, 0, 0.0
    for x, y in split.batches(batch_size, device=device):
        with prec.autocast():
            logits = model(prec.input(x)).float()
        loss_sum += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        h1, h5 = count_hits(logits, y)
        top1, top5, total = top1 + h1, top5 + h5, total + len(y)
    return {"test_top1": top1 / max(1, total), "test_top5": top5 / max(1, total),
            "test_loss": loss_sum / max(1, total)}


def device_for(gpus: float) -> torch.device:
    """CUDA when the trial was given a GPU and one is visible, else the CPU."""
    return torch.device("cuda") if gpus > 0 and torch.cuda.is_available() else torch.device("cpu")


EpochHook = Callable[[int, dict, dict], None]
STATE_KEYS = ("model", "optimizer", "precision", "epoch", "wall_s", "restores")


def _build(trial: dict, device: torch.device) -> tuple[nn.Module, torch.optim.SGD, Precision]:
    recipe = Recipe(**trial["recipe"])
    spec = make_spec(get_space(trial["space"], **trial["options"]), trial["channels"])
    prec = Precision(device, recipe.precision, recipe.channels_last)
    model = prec.model(build_model(spec).to(device))
    return model, build_optimizer(model, recipe), prec


def _restore(model: nn.Module, opt: torch.optim.Optimizer, prec: Precision, state: dict) -> tuple[int, float, int]:
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    prec.load_state_dict(state.get("precision", {}))
    return state["epoch"], state["wall_s"], state["restores"] + 1


def check_state(trial: dict, state: Any) -> int:
    """Raise ``ValueError`` naming the first part of ``state`` (an epoch checkpoint, as ``fit`` writes
    it and ``torch.load(weights_only=True)`` reads it) that does not fit ``trial``; else return the
    number of epochs it has finished (``1 .. epochs - 1``: a finished trial is never resumed)."""
    if not isinstance(state, dict):
        raise ValueError(f"holds {type(state).__name__}, not a dict of {', '.join(STATE_KEYS)}")
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"lacks {', '.join(missing)}")
    epoch, wall_s, restores = state["epoch"], state["wall_s"], state["restores"]
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 1 <= epoch < int(trial["epochs"]):
        raise ValueError(f"epoch={epoch!r}; accepted: an integer in [1, {int(trial['epochs']) - 1}]")
    if isinstance(wall_s, bool) or not isinstance(wall_s, (int, float)) or not (math.isfinite(wall_s) and wall_s >= 0):
        raise ValueError(f"wall_s={wall_s!r}; accepted: a finite number >= 0")
    if isinstance(restores, bool) or not isinstance(restores, int) or not 0 <= restores < 1_000_000:
        raise ValueError(f"restores={restores!r}; accepted: an integer >= 0")
    if not isinstance(state["precision"], dict):
        raise ValueError("precision is not a dict")
    model, opt, prec = _build(trial, torch.device("cpu"))
    try:
        _restore(model, opt, prec, state)
    except Exception as e:  # noqa: BLE001 - torch's messages for a foreign state dict vary
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"does not fit the trial's network or optimizer ({first[:200]})") from None
    return epoch


def fit(trial: dict, data: ScratchData, state: dict | None = None, on_epoch: EpochHook | None = None,
        before_epoch: Callable[[int], None] | None = None) -> dict[str, float]:
    """Train the network of one trial config (see :func:`metaprune.training.plan.trial_configs`)
    from scratch, or on from ``state``; after each epoch call ``on_epoch(epoch, metrics, state)``.

    Returns the last epoch's metrics. Test accuracy is the final epoch's, never the best one.
    """
    recipe = Recipe(**trial["recipe"])
    device = device_for(trial.get("gpus", 0))
    set_torch_threads(max(1, int(trial.get("threads", 1))))
    steady_allocator()  # no fresh pages per step (metaprune/process/malloc.py)
    seed, epochs = int(trial["seed"]), int(trial["epochs"])
    torch.manual_seed(seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes in scratch training (not in meta-training)
    model, opt, prec = _build(trial, device)
    start, wall_s, restores = 0, 0.0, 0
    if state is not None:
        start, wall_s, restores = _restore(model, opt, prec, state)
    metrics: dict[str, float] = {}
    for epoch in range(start, epochs):
        if before_epoch is not None:
            before_epoch(epoch)
        t0 = time.perf_counter()
        metrics = train_epoch(model, opt, data, recipe, epoch, epochs, seed, device,
                              slimming=float(trial.get("slimming", 0.0)), precision=prec)
        metrics.update(evaluate(model, data.test, recipe.eval_batch_size, device, prec))
        wall_s += time.perf_counter() - t0
        metrics.update(epoch=epoch + 1, epochs=epochs, wall_s=wall_s, restores=restores)
        if on_epoch is not None:
            on_epoch(epoch, metrics, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                                      "precision": prec.state_dict(), "epoch": epoch + 1, "wall_s": wall_s,
                                      "restores": restores})
    return metrics
