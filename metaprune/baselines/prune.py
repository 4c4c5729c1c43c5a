"""Global pruning to a MACs budget: remove the lowest-scored channels of the whole network until the
project's own cost model (MACs, conv + linear, BN folded) is at or under the budget.

Channels compete across units on their (normalised) scores; no unit goes below its smallest choice,
fixed units are never touched. Pruning every layer by the same ratio would reproduce the uniform
baseline; global ranking is what makes a criterion's architecture differ from it.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from pruningnet.cost import cost_model
from pruningnet.errors import UserError
from pruningnet.spaces.ir import Space


def prune_to_budget(space: Space, scores: Mapping[str, torch.Tensor], max_macs: int) -> tuple[dict[str, int], int]:
    """Channel counts at or under ``max_macs`` from per-unit scores (sorted descending, one per
    channel of the unit's max); returns ``(channels, macs)``.

    Removes channels in ascending score order (ties: the unit earlier in run order first, then the
    lower-ranked channel) and keeps the longest prefix of removals that fits: the result is the
    first point of that order at or under the budget."""
    cm = cost_model(space)
    full, low = space.max_channels(), space.min_channels()
    full_macs, min_macs = int(cm.macs(full)[0]), int(cm.macs(low)[0])
    if max_macs >= full_macs:
        raise UserError(f"--max-macs {max_macs:,} is not below the full network's {full_macs:,} MACs: nothing to "
                        f"prune; accepted: {min_macs:,} to {full_macs - 1:,}")
    if max_macs < min_macs:
        raise UserError(f"--max-macs {max_macs:,} is below the smallest network of space {space.name} "
                        f"({min_macs:,} MACs, every unit at its smallest choice); accepted: {min_macs:,} to "
                        f"{full_macs - 1:,}")
    units = list(space.unit_names)
    entries = []  # (score, unit index, rank) of every channel that may go
    for ui, u in enumerate(units):
        if u not in scores:
            continue
        s = scores[u].detach().cpu().numpy()
        if len(s) != full[u]:
            raise ValueError(f"unit {u}: {len(s)} scores for {full[u]} channels")
        removable = full[u] - low[u]
        # a unit loses its lowest-ranked channels first: ranks max-1, max-2, ... down to its minimum
        for rank in range(full[u] - 1, full[u] - 1 - removable, -1):
            entries.append((float(s[rank]), ui, -rank))
    entries.sort()
    order = np.array([e[1] for e in entries], dtype=np.int64)
    steps = np.zeros((len(order) + 1, len(units)), dtype=np.int64)
    if len(order):
        steps[np.arange(1, len(order) + 1), order] = 1
    vectors = np.array([full[u] for u in units], dtype=np.int64) - np.cumsum(steps, axis=0)
    macs = cm.macs(vectors)
    fits = np.nonzero(macs <= max_macs)[0]
    if not len(fits):  # cannot happen: removing every removable channel gives min_macs <= max_macs
        raise UserError(f"--max-macs {max_macs:,} cannot be reached")
    k = int(fits[0])
    return {u: int(vectors[k, i]) for i, u in enumerate(units)}, int(macs[k])
