"""Channel importance by the classic pruning criteria, on a trained full-width network of a space.

Per producing layer (see :func:`pruningnet.groups.unit_groups`), one score per output channel:

- ``l1`` / ``l2``: norm of the channel's filter (Li et al. 2017, "Pruning Filters for Efficient ConvNets");
- ``bn``: ``|gamma|`` of the channel's BatchNorm (Network Slimming, Liu et al. 2017; train the full
  network with ``--slimming LAMBDA`` for its L1 penalty on the scales);
- ``taylor``: first-order Taylor on the BN parameters, ``(gamma dL/dgamma + beta dL/dbeta)^2`` summed
  over mini-batches of the run's training data (Molchanov et al. 2019, "Importance Estimation for
  Neural Network Pruning", the FO-BN variant);
- ``fpgm``: sum of Euclidean distances from the filter to the layer's other filters: filters near the
  geometric median are replaceable (He et al. 2019);
- ``random``: uniform random scores, the sanity check.

Aggregation into one score per unit channel (Torch-Pruning's defaults for global pruning:
``group_reduction="mean"``, ``normalizer="mean"``): index-coupled layers' scores are averaged channel
by channel, the result is divided by its mean (``max`` and ``none`` also exist), and a unit with
several coupling classes
(ResNet-50's ``mid``: conv1 and conv2 outputs share a count, not channels) averages its classes *by
rank* (the k-th best channel of conv1 with the k-th best of conv2), since only the count is kept.
"""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

from pruningnet.errors import UserError
from pruningnet.groups import unit_groups
from pruningnet.spaces.ir import Space

CRITERIA = ("random", "l1", "l2", "bn", "taylor", "fpgm")
NORMALIZERS = ("mean", "max", "none")


def layer_scores(model: nn.Module, path: str, criterion: str, grads: dict[str, torch.Tensor] | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """One score per output channel of the ConvBNAct at ``path`` (higher: more important)."""
    block = model.get_submodule(path)
    w = block.conv.weight.detach().flatten(1).double()
    if criterion == "l1":
        return w.abs().sum(1)
    if criterion == "l2":
        return w.pow(2).sum(1).sqrt()
    if criterion == "bn":
        return block.bn.weight.detach().abs().double()
    if criterion == "fpgm":
        return torch.cdist(w, w).sum(1)
    if criterion == "taylor":
        if grads is None or path not in grads:
            raise ValueError("taylor needs the accumulated BN gradients")
        return grads[path].double()
    if criterion == "random":
        return torch.rand(w.shape[0], generator=generator, dtype=torch.float64)
    raise UserError(f"criterion {criterion!r} is unknown; accepted: {', '.join(CRITERIA)}")


def taylor_importance(model: nn.Module, paths: Iterable[str], batches: Iterable[tuple[torch.Tensor, torch.Tensor]]
                      ) -> dict[str, torch.Tensor]:
    """``sum over batches of (gamma * dL/dgamma + beta * dL/dbeta)^2`` per channel of each path's BN.

    BN runs on batch statistics for the backward passes, as during training; dropout is off (the
    estimate is a deterministic function of the weights and the batches). Weights and BN running
    statistics are left as they were."""
    paths = list(paths)
    acc = {p: torch.zeros(model.get_submodule(p).bn.num_features, dtype=torch.float64) for p in paths}
    loss_fn = nn.CrossEntropyLoss()
    was_training = model.training
    model.train()
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    state = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    try:
        for x, y in batches:
            model.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            for p in paths:
                bn = model.get_submodule(p).bn
                g = bn.weight * bn.weight.grad + bn.bias * bn.bias.grad
                acc[p] += g.detach().double().pow(2)
    finally:
        model.zero_grad(set_to_none=True)
        model.load_state_dict(state, strict=False)  # running statistics as they were
        model.train(was_training)
    return acc


def normalise(scores: torch.Tensor, normalizer: str) -> torch.Tensor:
    if normalizer == "mean":
        return scores / scores.mean().clamp_min(1e-12)
    if normalizer == "max":
        return scores / scores.max().clamp_min(1e-12)
    if normalizer == "none":
        return scores
    raise UserError(f"normaliser {normalizer!r} is unknown; accepted: {', '.join(NORMALIZERS)}")


def unit_scores(space: Space, model: nn.Module, criterion: str, *, normalizer: str = "mean",
                batches=None, seed: int = 0) -> dict[str, torch.Tensor]:
    """Per searchable unit, one score per channel of the full-width ``model``, sorted descending.

    ``batches``: an iterable of (images, labels) from the training data, needed by ``taylor``."""
    if criterion not in CRITERIA:
        raise UserError(f"criterion {criterion!r} is unknown; accepted: {', '.join(CRITERIA)}")
    if normalizer not in NORMALIZERS:
        raise UserError(f"normaliser {normalizer!r} is unknown; accepted: {', '.join(NORMALIZERS)}")
    groups = unit_groups(space)
    grads = None
    if criterion == "taylor":
        if batches is None:
            raise ValueError("taylor needs training batches")
        grads = taylor_importance(model, [p.path for cls in groups.values() for c in cls for p in c], batches)
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for unit, classes in groups.items():
        per_class = []
        for producers in classes:
            layer = [layer_scores(model, p.path, criterion, grads, gen) for p in producers]
            per_class.append(normalise(torch.stack(layer).mean(0), normalizer))
        ranked = torch.stack([s.sort(descending=True).values for s in per_class]).mean(0)
        out[unit] = ranked
    return out
