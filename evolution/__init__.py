"""Evolutionary channel search with DEAP over the functions it is handed.

This package knows genes (indices into each unit's channel choices), DEAP and the functions a caller
hands it: a batch cost function, budgets, a fitness function over channel tuples and a ``map``. It
imports neither torch nor ``pruningnet`` nor ``metaprune``.
"""
from .problem import BudgetError, Problem
from .pareto import hypervolume, nondominated_mask
from .search import EvolutionSettings, SearchResult, resume_search, run_search

__all__ = ["BudgetError", "EvolutionSettings", "Problem", "SearchResult", "hypervolume",
           "nondominated_mask", "resume_search", "run_search"]
