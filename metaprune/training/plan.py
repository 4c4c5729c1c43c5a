"""What to train: the chosen specs, one uniform-width baseline per distinct budget, the epochs of
each (Scratch-E or Scratch-B) and one trial config per (spec, seed)."""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

from pruningnet import SubnetSpec, cost_model, make_spec
from pruningnet.errors import UserError

from ..config import to_dict
from ..store.specfile import load_spec
from .recipe import TrainConfig, scratch_epochs


@dataclass(frozen=True)
class Candidate:
    """One network to train: a searched spec or the uniform baseline of a budget."""

    name: str
    kind: str  # "searched" or "baseline"
    spec: SubnetSpec
    macs: int
    params: int
    latency_ms: float | None = None
    proxy_top1: float | None = None
    baseline: str | None = None  # a searched spec's baseline name
    ratio: float | None = None  # a baseline's width ratio

    def row(self) -> dict:
        """The JSON-ready description (no results yet)."""
        return {"name": self.name, "kind": self.kind, "macs": self.macs, "params": self.params,
                "latency_ms": self.latency_ms, "proxy_top1": self.proxy_top1, "baseline": self.baseline,
                "ratio": self.ratio, "space": self.spec.space.name, "options": dict(self.spec.space.options),
                "channels": dict(self.spec.channels)}


def _metric(metrics: dict, *keys: str) -> float | None:
    for k in keys:
        v = metrics.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
    return None


def _searched(name: str, spec: SubnetSpec, latency_ms: float | None, proxy_top1: float | None) -> Candidate:
    cm = cost_model(spec.space)
    return Candidate(name, "searched", spec, int(cm.macs(spec.channels)[0]), int(cm.params(spec.channels)[0]),
                     latency_ms, proxy_top1)


def from_spec_files(paths: Sequence[str]) -> list[Candidate]:
    """Candidates from subnet spec files; proxy top-1 and latency come from the spec's metrics."""
    out = []
    for path in paths:
        spec = load_spec(path)
        m = spec.metrics
        cand = _searched(f"searched-{Path(path).stem}", spec, _metric(m, "latency_ms"),
                         _metric(m, "proxy_top1", "top1"))
        crit = spec.provenance.get("criterion")
        if isinstance(crit, str) and crit:  # a `metaprune baseline` spec: kind is its criterion
            cand = replace(cand, name=f"criterion-{Path(path).stem}", kind=crit)
        out.append(cand)
    return _unique(out)


def from_front(run_dir: str | Path, top: int) -> list[Candidate]:
    """The ``top`` entries of ``RUN/search/front.json`` by proxy top-1, highest first (the run and
    its front are read through their checked schemas: :func:`metaprune.store.runs.open_run`,
    :func:`metaprune.search.store.read_front`)."""
    from ..store.runs import open_run
    from ..search.store import read_front

    run = open_run(run_dir)
    front = read_front(run.path)["front"]
    ranked = sorted(front, key=lambda e: -float(e["top1"]))[:top]
    out = []
    for e in ranked:
        spec = make_spec(run.space, e["channels"], provenance={"run": str(run.path), "front_id": e["id"]})
        out.append(_searched(f"searched-{e['id']}", spec, _metric(e, "latency_ms"), _metric(e, "top1")))
    return _unique(out)


def _unique(cands: list[Candidate]) -> list[Candidate]:
    seen: dict[str, int] = {}
    out = []
    for c in cands:
        n = seen.get(c.name, 0)
        seen[c.name] = n + 1
        out.append(c if n == 0 else replace(c, name=f"{c.name}-{n + 1}"))
    return out


def with_baselines(searched: list[Candidate]) -> list[Candidate]:
    """``searched`` with their baselines appended: for each distinct budget (a searched spec's
    MACs), the uniform-width network of the largest MACs not above it."""
    baselines: dict[str, Candidate] = {}
    out = []
    for c in searched:
        cm = cost_model(c.spec.space)
        budget = c.macs
        pruned_to = c.spec.provenance.get("max_macs")
        if c.kind not in ("searched", "baseline") and isinstance(pruned_to, int):
            budget = max(c.macs, pruned_to)  # a criterion spec: the budget it was pruned to
        ratio, channels, macs = cm.uniform_for_budget(budget)
        name = f"uniform-{ratio:.4f}"
        if name not in baselines:
            spec = make_spec(c.spec.space, channels, provenance={"uniform_ratio": ratio})
            baselines[name] = Candidate(name, "baseline", spec, macs, int(cm.params(channels)[0]), ratio=ratio)
        out.append(replace(c, baseline=name))
    return out + list(baselines.values())


def trial_configs(cands: list[Candidate], cfg: TrainConfig, budget: str, epochs: int | None, seeds: int,
                  cpus_per_trial: float, gpus_per_trial: float) -> list[dict]:
    """One JSON-ready trial config per (candidate, seed); seed ``i`` is ``cfg.seed + i``."""
    if seeds < 1:
        raise UserError(f"--seeds {seeds} must be >= 1")
    recipe = to_dict(cfg.recipe)
    trials = []
    for c in cands:
        full_macs = int(cost_model(c.spec.space).macs(c.spec.space.max_channels())[0])
        n_epochs = epochs if epochs is not None else scratch_epochs(cfg.recipe, budget, c.macs, full_macs)
        for i in range(seeds):
            trials.append({"name": c.name, "kind": c.kind, "seed": cfg.seed + i, "epochs": n_epochs,
                           "space": c.spec.space.name, "options": dict(c.spec.space.options),
                           "channels": dict(c.spec.channels), "recipe": recipe,
                           "threads": max(1, int(cpus_per_trial)), "gpus": gpus_per_trial,
                           "crash_at_epoch": cfg.crash_at_epoch})
    return trials
