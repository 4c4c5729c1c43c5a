"""The search problem: per-gene choices, a batch cost function, budgets and a fitness function."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np

#: ``(N, G) int array of channels -> {"macs": (N,) array, "params": ..., ["latency_ms": ...]}``
CostFn = Callable[[np.ndarray], Mapping[str, np.ndarray]]
#: ``channels tuple -> score`` (higher is better, e.g. proxy top-1), or a mapping with ``score`` and
#: other numbers to keep on the candidate's record (e.g. ``{"score": -loss, "loss", "top1"}``).
FitnessFn = Callable[[tuple], "float | Mapping[str, float]"]


class BudgetError(ValueError):
    """A budget outside what the space can meet; carries the feasible range."""

    def __init__(self, metric: str, budget: float, low: float, high: float, side: str):
        self.metric, self.budget, self.low, self.high, self.side = metric, budget, low, high, side
        where = "below the smallest member" if side == "below" else "above the largest member"
        super().__init__(f"{metric} budget {budget:,} is {where}; feasible range {low:,} to {high:,} {metric}")


@dataclass(frozen=True)
class Problem:
    """What the search optimises: genes index ``choices[g]``; ``budgets`` cap ``cost_fn``'s outputs."""

    choices: tuple[tuple[int, ...], ...]
    cost_fn: CostFn = field(compare=False)
    fitness_fn: FitnessFn = field(compare=False)
    budgets: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "choices", tuple(tuple(int(c) for c in ch) for ch in self.choices))
        object.__setattr__(self, "budgets", dict(self.budgets))
        for g, ch in enumerate(self.choices):
            if not ch or list(ch) != sorted(set(ch)):
                raise ValueError(f"choices[{g}]={ch!r} must be non-empty, ascending and unique")

    @property
    def n_genes(self) -> int:
        return len(self.choices)

    @property
    def upper(self) -> np.ndarray:
        """Largest gene index of each gene."""
        return np.array([len(ch) - 1 for ch in self.choices], dtype=np.int64)

    def channels(self, genes: np.ndarray) -> np.ndarray:
        """(N, G) gene indices -> (N, G) channel counts."""
        genes = np.atleast_2d(np.asarray(genes, dtype=np.int64))
        out = np.empty_like(genes)
        for g, ch in enumerate(self.choices):
            out[:, g] = np.asarray(ch, dtype=np.int64)[genes[:, g]]
        return out

    def costs(self, genes: np.ndarray) -> dict[str, np.ndarray]:
        """Every cost of each row of ``genes`` (gene indices)."""
        return {k: np.asarray(v) for k, v in self.cost_fn(self.channels(genes)).items()}

    def feasible(self, costs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Rows whose every budgeted cost is at or under its budget."""
        n = len(next(iter(costs.values())))
        ok = np.ones(n, dtype=bool)
        for key, cap in self.budgets.items():
            ok &= np.asarray(costs[key]) <= cap
        return ok

    def check_budgets(self) -> dict[str, tuple[float, float]]:
        """The feasible range of every budgeted cost; raises :class:`BudgetError` before any work."""
        ends = np.stack([np.zeros(self.n_genes, dtype=np.int64), self.upper])
        costs = self.costs(ends)
        ranges = {}
        for key, cap in self.budgets.items():
            if key not in costs:
                raise ValueError(f"budget on {key!r} but the cost function gives only {sorted(costs)}")
            low, high = costs[key][0].item(), costs[key][1].item()
            if cap < low:
                raise BudgetError(key, cap, low, high, "below")
            if cap > high:
                raise BudgetError(key, cap, low, high, "above")
            ranges[key] = (low, high)
        return ranges
