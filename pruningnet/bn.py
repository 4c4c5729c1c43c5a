"""BatchNorm statistics re-estimation for a candidate network."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import nn


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Iterable[torch.Tensor]) -> nn.Module:
    """Reset every BN's running statistics and re-estimate them as a plain average over ``batches``.

    Returns ``model`` in eval mode.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None  # cumulative moving average: every batch counts equally
    model.train()
    device = next(model.parameters()).device
    for x in batches:  # batches may live in host memory: one at a time goes to the model's device
        model(x.to(device, non_blocking=True))
    return model.eval()
