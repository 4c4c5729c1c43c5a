"""Criterion-pruned architectures as baselines: score the channels of a trained full-width network
with a classic criterion, prune globally to a MACs budget, write the result as a subnet spec."""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pruningnet import make_spec
from pruningnet.cost import cost_model
from pruningnet.errors import UserError

from ..units import format_count
from .criteria import CRITERIA, NORMALIZERS, unit_scores
from .prune import prune_to_budget

TAYLOR_BATCH = 64


@dataclass
class BaselineRequest:
    criteria: tuple[str, ...]
    max_macs: int
    seeds: int = 1
    slimming: float = 0.0
    full_checkpoint: str | None = None
    normalizer: str = "mean"
    taylor_batches: int = 10


def parse_criteria(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(c.strip().lower() for c in text.split(",") if c.strip()))
    bad = [c for c in names if c not in CRITERIA]
    if not names or bad:
        raise UserError(f"--criteria {text!r}: {'unknown criterion ' + repr(bad[0]) if bad else 'none given'}; "
                        f"accepted: a comma-separated list of {', '.join(CRITERIA)}")
    return names


def check_request(req: BaselineRequest, space) -> None:
    """Everything refusable is refused before training or writing anything."""
    if req.seeds < 1:
        raise UserError(f"--seeds {req.seeds} must be >= 1")
    if not (isinstance(req.slimming, (int, float)) and math.isfinite(req.slimming) and 0 <= req.slimming <= 1):
        raise UserError(f"--slimming {req.slimming!r} is not accepted; accepted: a finite number in [0, 1] "
                        "(Network Slimming used 1e-4 to 1e-5)")
    if req.slimming and req.full_checkpoint:
        raise UserError("--slimming applies while training the full network; it cannot change --full-checkpoint")
    if req.normalizer not in NORMALIZERS:
        raise UserError(f"--normalizer {req.normalizer!r} is unknown; accepted: {', '.join(NORMALIZERS)}")
    if req.taylor_batches < 1:
        raise UserError(f"--taylor-batches {req.taylor_batches} must be >= 1")
    cm = cost_model(space)
    full = int(cm.macs(space.max_channels())[0])
    low = int(cm.macs(space.min_channels())[0])
    if not low <= req.max_macs < full:
        raise UserError(f"--max-macs {req.max_macs:,} is outside space {space.name}'s range; accepted: "
                        f"{low:,} (every unit at its smallest choice) to {full - 1:,} (below full width)")


def baseline_path(run_path: Path, criterion: str, max_macs: int, seed_index: int, seeds: int) -> Path:
    suffix = f"-seed{seed_index}" if seeds > 1 else ""
    return run_path / "baselines" / f"{criterion}-{format_count(max_macs)}{suffix}.json"


def make_baselines(run, cfg, data, req: BaselineRequest, log: Callable[[str], None] = print,
                   checkpoint_model=None) -> list[dict]:
    """Write ``RUN/baselines/<criterion>-<macs>[-seed<i>].json`` for each criterion and seed.
    ``checkpoint_model``: ``req.full_checkpoint`` already loaded (it is loaded here otherwise)."""
    import torch

    from ..store.fileio import atomic_write_many, dumps_json
    from .full import load_cached_full, load_full_checkpoint, train_full

    space = run.space
    check_request(req, space)
    if req.full_checkpoint and checkpoint_model is None:
        checkpoint_model = load_full_checkpoint(space, req.full_checkpoint)
    if not req.full_checkpoint:  # every cached full network is checked before any is trained or used
        for i in range(req.seeds):
            load_cached_full(run.path, space, cfg, cfg.seed + i, req.slimming)
    cm = cost_model(space)
    rows, texts = [], {}
    for i in range(req.seeds):
        seed = cfg.seed + i
        if req.full_checkpoint:
            model, record = checkpoint_model, {"file": str(req.full_checkpoint)}
        else:
            model, record = train_full(run.path, space, cfg, data, seed, req.slimming, log=log)
        for crit in req.criteria:
            batches = None
            if crit == "taylor":
                gen = torch.Generator().manual_seed(seed)
                batches = itertools.islice(data.train.batches(TAYLOR_BATCH, shuffle=True, generator=gen,
                                                              drop_last=True), req.taylor_batches)
            scores = unit_scores(space, model, crit, normalizer=req.normalizer, batches=batches, seed=seed)
            channels, macs = prune_to_budget(space, scores, req.max_macs)
            params = int(cm.params(channels)[0])
            provenance = {"criterion": crit, "checkpoint": record.get("file"), "seed": seed,
                          "normalizer": req.normalizer, "max_macs": req.max_macs, "run": str(run.path),
                          "slimming": req.slimming, "full_test_top1": record.get("test_top1")}
            if crit == "taylor":
                provenance["taylor_batches"] = req.taylor_batches
            spec = make_spec(space, channels, {"macs": macs, "params": params}, provenance)
            path = baseline_path(run.path, crit, req.max_macs, i, req.seeds)
            texts[path] = dumps_json(spec.to_dict())
            rows.append({"criterion": crit, "seed": seed, "macs": macs, "params": params, "file": str(path),
                         "channels": channels})
    atomic_write_many(texts)  # every spec or none: a failure leaves the earlier ones as they were
    return rows
