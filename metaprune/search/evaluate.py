"""Scoring and costing candidates of a run: the fitness and cost functions handed to :mod:`evolution`."""
from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from pruningnet.cost import cost_model
from pruningnet.errors import UserError
from pruningnet.spaces import Space

from ..store.schemas import MAX_LOSS
from .config import SearchConfig


@dataclass(frozen=True)
class ProxySettings:
    """BN re-estimation batches, batch size, search-split images and seed of the proxy top-1."""

    bn_batches: int
    batch_size: int
    max_images: int | None
    seed: int
    threads: int | None = None
    execution: str | None = None  # None (states written before issue 29): auto
    score: str | None = None  # None (states written before issue 26): top1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proxy_settings(run, cfg: SearchConfig, seed: int) -> ProxySettings:
    """The search config's eval settings, falling back to the run's meta-training eval section."""
    run_eval = run.config.eval
    return ProxySettings(
        bn_batches=cfg.eval.bn_batches or run_eval.bn_batches,
        batch_size=cfg.eval.batch_size or run_eval.batch_size,
        max_images=cfg.eval.max_images if cfg.eval.max_images is not None else run_eval.max_images,
        seed=seed, threads=cfg.eval.threads, execution=cfg.eval.execution, score=cfg.eval.score)


def proxy_score(res: dict, score: str | None) -> float | dict[str, float]:
    """The fitness of an :func:`metaprune.evaluation.evaluate` result: its top-1 (``score`` top1 or
    None), or for ``loss`` a mapping whose ``score`` is minus the mean cross-entropy (the search
    maximises it, so a lower loss ranks higher even where top-1 ties) and which keeps ``top1`` and
    ``loss`` on the candidate's record."""
    if score in (None, "top1"):
        return float(res["top1"])
    if score == "loss":
        loss = float(res["loss"])
        if not math.isfinite(loss) or loss > MAX_LOSS:  # a diverged candidate ranks last, and stays JSON
            loss = MAX_LOSS
        return {"score": -loss, "top1": float(res["top1"]), "loss": loss}
    raise ValueError(f"score {score!r}; accepted: top1, loss")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a GPU is visible, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class ProxyScorer:
    """A run's PruningNet, data and BN batches, loaded once; called on a channel tuple (in the
    space's unit order) it returns the proxy top-1 (a fraction) on the search split, or, with
    ``settings.score == "loss"``, ``{"score": -loss, "top1", "loss"}`` (:func:`proxy_score`)."""

    def __init__(self, run_path: str | Path, settings: ProxySettings, device: str = "cpu"):
        import torch

        from ..evaluation import bn_batches
        from ..store.runs import open_run

        from ..process.malloc import steady_allocator
        from ..process.threads import set_torch_threads

        set_torch_threads(settings.threads)
        steady_allocator()  # no fresh pages per candidate (metaprune/process/malloc.py)
        torch.manual_seed(settings.seed)
        run = open_run(run_path)
        self.space: Space = run.space
        self.settings = settings
        self.net = run.load_pruningnet(device=resolve_device(device))
        self.data = run.load_data()
        device = next(self.net.parameters()).device
        self.batches = bn_batches(self.data, settings.bn_batches, settings.batch_size, settings.seed, device)
        from pruningnet.masked import resolve_execution

        try:
            self.execution = resolve_execution(settings.execution or "auto", device, self.space)
        except ValueError as e:
            raise UserError(f"search eval.{e}") from None

    def __call__(self, channels: tuple[int, ...]) -> float:
        from ..evaluation import evaluate

        ch = dict(zip(self.space.unit_names, (int(c) for c in channels)))
        res = evaluate(self.net, ch, self.data, max_images=self.settings.max_images,
                       batch_size=self.settings.batch_size, seed=self.settings.seed, batches=self.batches,
                       execution=self.execution)
        return proxy_score(res, self.settings.score)

    def model(self, channels: dict[str, int]):
        """The plain network of ``channels`` with generated weights and re-estimated BN."""
        from ..evaluation import generate

        return generate(self.net, channels, self.data, batch_size=self.settings.batch_size,
                        seed=self.settings.seed, batches=self.batches)


def load_latency_table(run_path: Path):
    """The run's latency table; :class:`UserError` when it has none."""
    from ..latency import default_table_path, load_table

    path = default_table_path(run_path)
    if not os.path.lexists(path):
        raise UserError(f"run {str(run_path)!r} has no latency table at {str(path)!r}; run "
                        f"`metaprune latency build {run_path}` first")
    return load_table(path, follow=False)


def make_cost_fn(space: Space, latency_table=None, metapruning_flops: bool = False
                 ) -> Callable[[np.ndarray], dict[str, np.ndarray]]:
    """``(N, units) channels -> {"macs", "params"[, "flops_metapruning"][, "latency_ms"]}`` for
    :class:`evolution.Problem` (``flops_metapruning``: MetaPruning's counter, when asked)."""
    cm = cost_model(space)

    def cost(x: np.ndarray) -> dict[str, np.ndarray]:
        out = {"macs": cm.macs(x), "params": cm.params(x)}
        if metapruning_flops:
            out["flops_metapruning"] = cm.metapruning_flops(x)
        if latency_table is not None:
            out["latency_ms"] = np.asarray(latency_table.predict_ms(space, x), dtype=np.float64)
        return out

    return cost
