"""Scoring a channel vector with PruningNet weights: the proxy the search ranks by.

Weights are generated once per candidate (into a static network), BN statistics are re-estimated
on training batches, and top-1/top-5 and the cross-entropy loss are measured on the search split,
never on the test split (the search ranks by top-1, or by the loss with search ``eval.score: loss``).
"""
from __future__ import annotations

import weakref
from typing import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from pruningnet.bn import fold_bn, recalibrate_bn
from pruningnet.hypernet import PruningNet
from pruningnet.masked import MaskedEvaluator, resolve_execution

from .data import DataSplits


def _device(net: nn.Module) -> torch.device:
    return next(net.parameters()).device


def bn_batches(data: DataSplits, count: int, batch_size: int, seed: int, device) -> list[torch.Tensor]:
    """The same ``count`` training batches (no augmentation) for every candidate of a search.

    They stay in host memory (pinned when CUDA is there, for fast asynchronous copies) whatever
    ``device`` is: :func:`pruningnet.bn.recalibrate_bn` moves one batch at a time to the model. Held on
    the device, the ImageNet config's 100 batches of 250 images at 224 would take 15 GB per evaluator."""
    gen = torch.Generator().manual_seed(seed)
    pin = str(device).startswith("cuda") and torch.cuda.is_available()
    out = []
    for x, _ in data.train.batches(batch_size, shuffle=True, generator=gen, device="cpu"):
        out.append(x.pin_memory() if pin else x)
        if len(out) == count:
            break
    return out


_draw_bn_batches = bn_batches  # `generate` and `evaluate` take a count named bn_batches


def generate(net: PruningNet, channels: Mapping[str, int], data: DataSplits, bn_batches: int = 10,
             batch_size: int = 128, seed: int = 0, batches: list[torch.Tensor] | None = None,
             channels_last: bool | None = None) -> nn.Module:
    """A plain network with the vector's generated weights and re-estimated BN, in eval mode.

    ``channels_last`` (default: on the CPU only) stores the network's weights, and so its activations,
    channels-last: BN re-estimation runs BN in training mode, whose CPU kernel is 2.6-4x faster on
    channels-last activations, and a candidate's evaluation took 0.72 instead of 1.16 s on the smoke
    config (2 threads, AMD EPYC; BENCHMARKS.md, issue 17). Scores differ from the NCHW ones only by
    float rounding (up to 2 of 500 images in that benchmark)."""
    device = _device(net)
    model = net.generate(channels)
    if channels_last is None:
        channels_last = device.type == "cpu"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if batches is None:
        batches = _draw_bn_batches(data, bn_batches, batch_size, seed, device)
    return recalibrate_bn(model, batches)


def count_hits(logits: torch.Tensor, labels: torch.Tensor) -> tuple[int, int]:
    """How many rows have the label as the top-1 and within the top-5 prediction."""
    k = min(5, logits.shape[1])
    hit = logits.topk(k, dim=1).indices == labels.view(-1, 1)
    return int(hit[:, 0].sum()), int(hit.any(dim=1).sum())


@torch.no_grad()
def accuracy(model: nn.Module | Callable, split, max_images: int | None = None, batch_size: int = 256,
             device=None) -> dict[str, float]:
    """Top-1 and top-5 (fractions) and the mean cross-entropy ``loss`` (nats, no label smoothing) of
    ``model`` (a module, or a callable with ``device`` given) on ``split`` (the first ``max_images``
    images)."""
    device = device or _device(model)
    if isinstance(model, nn.Module):
        model.eval()
    n = top1 = top5 = 0
    loss = 0.0
    for x, y in split.batches(batch_size, device=device):
        if max_images is not None and n + len(y) > max_images:
            x, y = x[: max_images - n], y[: max_images - n]
        logits = model(x)
        h1, h5 = count_hits(logits, y)
        loss += float(F.cross_entropy(logits.float(), y, reduction="sum"))
        top1, top5, n = top1 + h1, top5 + h5, n + len(y)
        if max_images is not None and n >= max_images:
            break
    return {"top1": top1 / max(n, 1), "top5": top5 / max(n, 1), "loss": loss / max(n, 1), "images": n}


_MASKED: "weakref.WeakKeyDictionary[PruningNet, MaskedEvaluator]" = weakref.WeakKeyDictionary()


def masked_evaluator(net: PruningNet) -> MaskedEvaluator:
    """The net's :class:`~pruningnet.masked.MaskedEvaluator`, built once and reused by every candidate."""
    ev = _MASKED.get(net)
    if ev is None:
        ev = _MASKED[net] = MaskedEvaluator(net)
    return ev


def evaluate(net: PruningNet, channels: Mapping[str, int], data: DataSplits, bn_batches: int = 10,
             max_images: int | None = None, batch_size: int = 128, seed: int = 0,
             batches: list[torch.Tensor] | None = None, channels_last: bool | None = None,
             execution: str = "sliced") -> dict[str, float]:
    """Proxy accuracy of one vector: ``{"top1", "top5", "loss"}`` (``loss``: mean cross-entropy) on the
    search split after BN re-estimation.

    Pass ``batches`` (from :func:`bn_batches`) to reuse the BN batches across candidates;
    ``channels_last``: see :func:`generate`. Each BN is folded into its conv before scoring
    (:func:`pruningnet.bn.fold_bn`: the same scores up to float rounding, faster).

    ``execution`` (:func:`pruningnet.masked.resolve_execution`; ``auto``: masked on CUDA): ``masked``
    re-estimates BN and scores on the PruningNet at max width with the vector's channel masks
    (:class:`pruningnet.masked.MaskedEvaluator`: the same shapes for every candidate, no network built),
    the same proxy up to float rounding.
    """
    device = _device(net)
    if resolve_execution(execution, device, net.space) == "masked":
        ev = masked_evaluator(net)
        ev.prepare(channels)
        ev.calibrate(batches if batches is not None else _draw_bn_batches(data, bn_batches, batch_size, seed, device))
        res = accuracy(ev, data.search, max_images, batch_size, device=device)
        return {"top1": res["top1"], "top5": res["top5"], "loss": res["loss"]}
    model = fold_bn(generate(net, channels, data, bn_batches, batch_size, seed, batches, channels_last))
    res = accuracy(model, data.search, max_images, batch_size)
    return {"top1": res["top1"], "top5": res["top5"], "loss": res["loss"]}
