"""One DEAP toolbox, built from arguments, for both strategies.

``constrained`` is MetaPruning's search: the top ``parents`` by score breed ``mutations`` mutants and
``crossovers`` uniform crossovers every generation. ``pareto`` breeds the same way from an NSGA-II
population over (score, cost objectives...).
"""
from __future__ import annotations

from typing import Callable

import numpy as np
from deap import base, creator, tools

from .problem import Problem
from .sampling import repair, sample

STRATEGIES = ("constrained", "pareto")
MAX_COST_OBJECTIVES = 3

# DEAP wants its classes at module level so worker processes can unpickle individuals.
if not hasattr(creator, "FitnessScore"):
    creator.create("FitnessScore", base.Fitness, weights=(1.0,))
    creator.create("ScoreIndividual", list, fitness=creator.FitnessScore)
for _m in range(1, MAX_COST_OBJECTIVES + 1):
    if not hasattr(creator, f"FitnessPareto{_m}"):
        creator.create(f"FitnessPareto{_m}", base.Fitness, weights=(1.0,) + (-1.0,) * _m)
        creator.create(f"ParetoIndividual{_m}", list, fitness=getattr(creator, f"FitnessPareto{_m}"))


def individual_class(strategy: str, n_objectives: int) -> type:
    """The DEAP individual class of a strategy (``n_objectives`` cost objectives for ``pareto``)."""
    if strategy == "constrained":
        return creator.ScoreIndividual
    if not 1 <= n_objectives <= MAX_COST_OBJECTIVES:
        raise ValueError(f"pareto takes 1 to {MAX_COST_OBJECTIVES} cost objectives, got {n_objectives}")
    return getattr(creator, f"ParetoIndividual{n_objectives}")


def make_toolbox(problem: Problem, *, strategy: str, objectives: tuple[str, ...], parents: int,
                 population: int, mutation_prob: float, crossover_prob: float,
                 rng: np.random.Generator, map_fn: Callable = map) -> base.Toolbox:
    """Register attribute -> individual -> population -> evaluate -> mate -> mutate -> select.

    ``rng`` drives sampling and repair; DEAP's operators draw from the ``random`` module, whose
    state the caller owns (see :mod:`evolution.search`).
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    ind_cls = individual_class(strategy, len(objectives))
    tb = base.Toolbox()
    tb.register("genes", sample, problem, rng=rng)
    tb.register("individual", lambda genes: ind_cls(int(g) for g in genes))
    tb.register("population", lambda n: [tb.individual(g) for g in tb.genes(n)])
    tb.register("repair", repair, problem, rng=rng)  # (N, G) genes -> the same rows, shrunk to fit
    tb.register("evaluate", problem.fitness_fn)
    tb.register("map", map_fn)
    tb.register("mate", tools.cxUniform, indpb=crossover_prob)
    tb.register("mutate", tools.mutUniformInt, low=0, up=[int(u) for u in problem.upper],
                indpb=mutation_prob)
    if strategy == "constrained":
        tb.register("select", tools.selBest, k=parents)
    else:
        tb.register("select", tools.selNSGA2, k=population)
    tb.register("fitness_values", _fitness_values, strategy=strategy, objectives=objectives)
    return tb


def _fitness_values(record: dict, *, strategy: str, objectives: tuple[str, ...]) -> tuple[float, ...]:
    if strategy == "constrained":
        return (record["score"],)
    return (record["score"],) + tuple(float(record[k]) for k in objectives)

