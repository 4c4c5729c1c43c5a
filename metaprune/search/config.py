"""The search config (``configs/search/*.yaml``); the defaults are MetaPruning's search."""
from __future__ import annotations

import dataclasses

from dataclasses import dataclass, field
from typing import Literal

from evolution import EvolutionSettings

from ..config import check

COST_KEYS = ("macs", "params", "latency_ms", "flops_metapruning")


@dataclass(frozen=True)
class SearchEvalConfig:
    """How each candidate is scored: BN re-estimated on ``bn_batches`` training batches, top-1 (or,
    with ``score: loss``, minus the cross-entropy loss) on at most ``max_images`` search-split images (None: the run's meta-training eval setting), with
    ``threads`` torch threads per evaluator (None: torch's default; 1 avoids thread contention on
    small, busy CPUs and is what each Ray actor uses). ``execution``: BN re-estimation and scoring on
    the network built for the vector (sliced) or on the PruningNet at max width with channel masks
    (masked: the same shapes for every candidate, the same proxy up to float rounding); auto: masked on
    CUDA, sliced on the CPU (issue 29)."""

    bn_batches: int | None = None  # BN re-estimation batches per candidate; null: the run's eval.bn_batches
    max_images: int | None = None  # search-split images scored per candidate; null: the run's eval.max_images
    batch_size: int | None = None  # null: the run's eval.batch_size
    threads: int | None = None  # torch threads per evaluator; null: torch's default (each Ray actor uses 1)
    execution: Literal["auto", "sliced", "masked"] = "auto"  # sliced, masked, or auto: masked on CUDA, sliced on the CPU
    # what the search maximises: top1 (proxy top-1 on the search split) or loss (minus the candidate's
    # mean cross-entropy there, which separates vectors whose top-1 ties; issue 26 part 4). With loss,
    # candidates.json and front.json say "score": "loss" and keep top1 beside each candidate's loss
    score: Literal["top1", "loss"] = "top1"

    def validate(self, prefix: str = "") -> None:
        for key in ("bn_batches", "max_images", "batch_size", "threads"):
            v = getattr(self, key)
            check(v is None or v >= 1, prefix + key, v, "an integer >= 1 or null")


_DEFAULTS = EvolutionSettings()


@dataclass(frozen=True)
class SearchConfig:
    """Strategy, population sizes and operators, and the proxy evaluation."""

    # typed for YAML validation; the defaults are evolution's (MetaPruning's) own
    # constrained: the best proxy accuracy under one budget (--max-macs ...); pareto: the front over objectives
    strategy: Literal["constrained", "pareto"] = _DEFAULTS.strategy
    population: int = _DEFAULTS.population  # vectors per generation
    parents: int = _DEFAULTS.parents  # constrained: the top-k that breed
    mutations: int = _DEFAULTS.mutations  # children by mutation per generation
    crossovers: int = _DEFAULTS.crossovers  # children by uniform crossover per generation
    mutation_prob: float = _DEFAULTS.mutation_prob  # chance that each gene of a mutated child changes, in [0, 1]
    crossover_prob: float = _DEFAULTS.crossover_prob  # chance that each gene comes from the other parent, in [0, 1]
    generations: int = _DEFAULTS.generations  # evaluated populations, the first included
    objectives: tuple[str, ...] = _DEFAULTS.objectives  # cost keys that pareto minimises: macs, params, latency_ms, flops_metapruning
    seed_uniform: bool = _DEFAULTS.seed_uniform  # start from every uniform-width vector that fits
    seed: int | None = None  # null: the run's seed
    eval: SearchEvalConfig = field(default_factory=SearchEvalConfig)

    def validate(self, prefix: str = "") -> None:
        for key in ("population", "parents", "generations"):
            check(getattr(self, key) >= 1, prefix + key, getattr(self, key), "an integer >= 1")
        for key in ("mutations", "crossovers"):
            check(getattr(self, key) >= 0, prefix + key, getattr(self, key), "an integer >= 0")
        check(self.generations == 1 or self.mutations + self.crossovers >= 1, prefix + "mutations",
              self.mutations, "mutations + crossovers >= 1 when generations > 1")
        for key in ("mutation_prob", "crossover_prob"):
            check(0.0 <= getattr(self, key) <= 1.0, prefix + key, getattr(self, key), "a number in [0, 1]")
        check(1 <= len(self.objectives) <= 3 and len(set(self.objectives)) == len(self.objectives)
              and all(k in COST_KEYS for k in self.objectives), prefix + "objectives",
              list(self.objectives), f"1 to 3 distinct of {', '.join(COST_KEYS)}")
        check(self.seed is None or self.seed >= 0, prefix + "seed", self.seed, "an integer >= 0 or null")

    def settings(self) -> EvolutionSettings:
        """The :class:`~evolution.EvolutionSettings` of this config."""
        return EvolutionSettings(**{f.name: getattr(self, f.name) for f in dataclasses.fields(EvolutionSettings)})
