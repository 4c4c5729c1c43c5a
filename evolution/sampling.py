"""Feasible vectors without rejection loops: draw around a random width level, then shrink to fit.

Shrinking lowers gene indices of over-budget rows until every budget holds. Each round lowers at
least one index of every over-budget row, so it ends after at most ``sum(upper)`` rounds, at the
smallest member in the worst case (which :meth:`Problem.check_budgets` has shown to be feasible).
"""
from __future__ import annotations

import numpy as np

from .problem import Problem


def repair(problem: Problem, genes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``genes`` (N, G) with over-budget rows shrunk until they fit; feasible rows are unchanged."""
    genes = np.array(genes, dtype=np.int64, copy=True).reshape(-1, problem.n_genes)
    if not problem.budgets or len(genes) == 0:
        return genes
    for _ in range(int(problem.upper.sum()) + 1):
        costs = problem.costs(genes)
        over = ~problem.feasible(costs)
        if not over.any():
            return genes
        excess = np.zeros(len(genes))
        for key, cap in problem.budgets.items():
            excess = np.maximum(excess, np.asarray(costs[key], dtype=np.float64) / cap - 1.0)
        for i in np.flatnonzero(over):
            movable = np.flatnonzero(genes[i] > 0)
            # Far over budget: lower many genes a step; just over it: lower few.
            p = float(np.clip(8.0 * excess[i], 1.0 / len(movable), 1.0))
            pick = movable[rng.random(len(movable)) < p]
            if len(pick) == 0:
                pick = rng.choice(movable, size=1)
            genes[i, pick] -= 1
    raise AssertionError("repair did not converge although the smallest member is feasible")


def sample(problem: Problem, n: int, rng: np.random.Generator, spread: float = 0.15) -> np.ndarray:
    """``n`` feasible gene vectors: each row draws a width level in [0, 1] and genes scatter
    around it (``spread`` of each gene's range), then over-budget rows are shrunk to fit."""
    upper = problem.upper.astype(np.float64)
    level = rng.random((n, 1))
    raw = level * upper + rng.normal(0.0, spread, (n, problem.n_genes)) * upper
    genes = np.clip(np.rint(raw), 0, upper).astype(np.int64)
    return repair(problem, genes, rng)


def uniform_genes(problem: Problem) -> np.ndarray:
    """The on-grid uniform-width vectors of ``problem``, narrowest first: at each width level ``r``
    (every ``choice / largest choice`` of any gene), each gene takes its choice nearest
    ``r * largest`` (ties to the narrower). Duplicates are dropped; the first row is every gene at
    its smallest choice, the last every gene at its largest."""
    levels = sorted({c / ch[-1] for ch in problem.choices for c in ch})
    rows, seen = [], set()
    for r in levels:
        row = tuple(min(range(len(ch)), key=lambda i: (abs(ch[i] - r * ch[-1]), ch[i])) for ch in problem.choices)
        if row not in seen:
            seen.add(row)
            rows.append(row)
    return np.array(rows, dtype=np.int64).reshape(-1, problem.n_genes)


def channels_to_genes(problem: Problem, channels) -> np.ndarray:
    """(N, G) channel counts -> gene indices; ``ValueError`` naming a count that is not a choice."""
    channels = np.atleast_2d(np.asarray(channels, dtype=np.int64))
    if channels.shape[1] != problem.n_genes:
        raise ValueError(f"a seed vector has {channels.shape[1]} genes; accepted: {problem.n_genes}")
    out = np.empty_like(channels)
    for g, ch in enumerate(problem.choices):
        index = {c: i for i, c in enumerate(ch)}
        for n, c in enumerate(channels[:, g]):
            if int(c) not in index:
                raise ValueError(f"seed vector {n}: {int(c)} channels at gene {g} is not one of its choices {list(ch)}")
            out[n, g] = index[int(c)]
    return out
