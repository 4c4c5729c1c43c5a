"""The generation loop: evaluate each vector once, record every candidate, resume from a state.

After every generation ``on_generation(state)`` receives a JSON-ready dict (population, every
evaluated candidate, logbook, RNG states); :func:`resume_search` takes that dict back and continues
so that a resumed run ends exactly where an uninterrupted one with the same seed would.
"""
from __future__ import annotations

import contextlib
import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np
from deap import tools

from .pareto import nondominated_mask
from .problem import Problem
from .sampling import channels_to_genes, uniform_genes
from .toolbox import MAX_COST_OBJECTIVES, STRATEGIES, make_toolbox

STATE_FORMAT = "evolution.state/1"
#: Breeding tries at most this many times the children it wants before giving up on duplicates.
ATTEMPTS_PER_CHILD = 20


@dataclass(frozen=True)
class EvolutionSettings:
    """Search hyper-parameters; the defaults are MetaPruning's.

    ``generations`` counts evaluated populations including the initial one, so at most
    ``population + (generations - 1) * (mutations + crossovers)`` vectors are evaluated.
    ``parents`` is the top-k that breeds in ``constrained``; ``pareto`` breeds from an NSGA-II
    population of ``population`` vectors. ``objectives`` are the cost keys ``pareto`` minimises
    (and the front of either strategy is taken over). ``seed_uniform``: the initial population
    holds every on-grid uniform-width vector that fits the budgets (:func:`~evolution.sampling.uniform_genes`),
    so no uniform network the fitness scores higher is missed; the rest is sampled.
    """

    strategy: str = "constrained"
    population: int = 50
    parents: int = 10
    mutations: int = 25
    crossovers: int = 25
    mutation_prob: float = 0.1
    crossover_prob: float = 0.5
    generations: int = 20
    objectives: tuple[str, ...] = ("macs",)
    seed_uniform: bool = True

    def validate(self) -> None:
        """Raise ``ValueError`` naming the first bad setting."""
        checks = [
            (self.strategy in STRATEGIES, "strategy", f"one of {', '.join(STRATEGIES)}"),
            (self.population >= 1, "population", ">= 1"),
            (self.parents >= 1, "parents", ">= 1"),
            (self.mutations >= 0, "mutations", ">= 0"),
            (self.crossovers >= 0, "crossovers", ">= 0"),
            (self.generations == 1 or self.mutations + self.crossovers >= 1, "mutations",
             "mutations + crossovers >= 1 when generations > 1"),
            (0.0 <= self.mutation_prob <= 1.0, "mutation_prob", "in [0, 1]"),
            (0.0 <= self.crossover_prob <= 1.0, "crossover_prob", "in [0, 1]"),
            (self.generations >= 1, "generations", ">= 1"),
            (isinstance(self.seed_uniform, bool), "seed_uniform", "true or false"),
            (1 <= len(self.objectives) <= MAX_COST_OBJECTIVES
             and len(set(self.objectives)) == len(self.objectives), "objectives",
             f"1 to {MAX_COST_OBJECTIVES} distinct cost keys"),
        ]
        for ok, key, accepted in checks:
            if not ok:
                raise ValueError(f"{key}={getattr(self, key)!r} is not accepted; accepted: {accepted}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["objectives"] = list(self.objectives)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvolutionSettings":
        d = dict(d)
        d["objectives"] = tuple(d.get("objectives", ("macs",)))
        return cls(**d)

    def matches(self, saved: Mapping[str, Any]) -> bool:
        """Whether a saved state's settings are these (keys added since it was saved at their defaults)."""
        try:
            return EvolutionSettings.from_dict(saved).to_dict() == self.to_dict()
        except TypeError:
            return False


@dataclass(frozen=True)
class SearchResult:
    """Every evaluated candidate, the front over (score, objectives), the best by score, the
    logbook and the final state."""

    candidates: tuple[dict, ...]
    front: tuple[dict, ...]
    best: dict
    logbook: tuple[dict, ...]
    state: dict


def _fitness_record(value: float | Mapping[str, float], rec: dict) -> dict[str, float]:
    """A fitness value as record fields: ``{"score": value}``, or a mapping's ``score`` and its other
    numbers (kept on the candidate, e.g. the top-1 beside a loss-based score)."""
    if not isinstance(value, Mapping):
        return {"score": float(value)}
    clash = sorted(k for k in value if k in rec)
    if "score" not in value or clash:
        raise ValueError(f"a fitness mapping needs 'score' and no candidate field (got {sorted(value)})")
    return {k: float(v) for k, v in value.items()}


def pareto_front(candidates: list[dict] | tuple[dict, ...], objectives: tuple[str, ...]) -> list[dict]:
    """Candidates no other beats on score (higher) and every objective (lower), by ``objectives[0]``."""
    cands = list(candidates)
    if not cands:
        return []
    pts = np.array([[-c["score"]] + [float(c[k]) for k in objectives] for c in cands])
    mask = nondominated_mask(pts)
    front = [c for c, m in zip(cands, mask) if m]
    return sorted(front, key=lambda c: (c[objectives[0]], -c["score"], c["id"]))


def best_candidate(candidates: list[dict] | tuple[dict, ...], objective: str = "macs") -> dict:
    """Highest score; ties go to the cheaper, then the earlier candidate."""
    return min(candidates, key=lambda c: (-c["score"], c[objective], c["id"]))


def _random_state_to_json(state: tuple) -> list:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _random_state_from_json(state: list) -> tuple:
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


class _Search:
    """One search's mutable state; see :func:`run_search`."""

    def __init__(self, problem: Problem, settings: EvolutionSettings, seed: int, map_fn: Callable,
                 on_generation: Callable[[dict], None] | None, initial=()):
        settings.validate()
        problem.check_budgets()
        self.problem, self.settings, self.seed = problem, settings, int(seed)
        self.initial = channels_to_genes(problem, initial) if len(initial) else np.zeros((0, problem.n_genes), np.int64)
        self.on_generation = on_generation
        self.rng = np.random.default_rng(self.seed)
        # DEAP's operators use the `random` module: this search owns a state of its own.
        self.random_state = random.Random(int(self.rng.integers(2**63))).getstate()
        self.toolbox = make_toolbox(problem, strategy=settings.strategy, objectives=settings.objectives,
                                    parents=settings.parents, population=settings.population,
                                    mutation_prob=settings.mutation_prob,
                                    crossover_prob=settings.crossover_prob, rng=self.rng, map_fn=map_fn)
        self.cache: dict[tuple[int, ...], dict] = {}
        self.candidates: list[dict] = []
        self.logbook = tools.Logbook()
        self.elite: list = []
        self.population: list = []
        self.generation = -1
        self._check_objectives()

    def _check_objectives(self) -> None:
        keys = self.problem.costs(np.zeros((1, self.problem.n_genes), dtype=np.int64)).keys()
        for k in self.settings.objectives:
            if k not in keys:
                raise ValueError(f"objective {k!r} is not a cost; the cost function gives {sorted(keys)}")

    # -- randomness -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _own_random(self) -> Iterator[None]:
        outer = random.getstate()
        random.setstate(self.random_state)
        try:
            yield
        finally:
            self.random_state = random.getstate()
            random.setstate(outer)

    # -- evaluation -------------------------------------------------------------------------
    def _evaluate(self, inds: list, generation: int) -> int:
        """Give every individual its fitness, evaluating each vector not seen before once."""
        new, seen = [], set()
        for ind in inds:
            key = tuple(ind)
            if key not in self.cache and key not in seen:
                new.append(ind)
                seen.add(key)
        if new:
            genes = np.array(new, dtype=np.int64)
            channels = self.problem.channels(genes)
            costs = self.problem.costs(genes)
            scores = list(self.toolbox.map(self.toolbox.evaluate,
                                           [tuple(int(c) for c in row) for row in channels]))
            for i, ind in enumerate(new):
                rec = {"id": len(self.candidates), "generation": generation,
                       "genes": [int(g) for g in ind], "channels": [int(c) for c in channels[i]]}
                rec.update({k: np.asarray(v)[i].item() for k, v in costs.items()})
                rec.update(_fitness_record(scores[i], rec))
                self.cache[tuple(ind)] = rec
                self.candidates.append(rec)
        for ind in inds:
            ind.fitness.values = self.toolbox.fitness_values(self.cache[tuple(ind)])
        return len(new)

    # -- variation --------------------------------------------------------------------------
    def seeds(self) -> np.ndarray:
        """The vectors the initial population starts with: the caller's ``initial`` ones, then (with
        ``seed_uniform``) the uniform-width ones, all that fit the budgets, without duplicates; at
        most ``population`` of them (the caller's first, then uniform ones spread over the widths,
        the widest that fits always among them)."""
        uni = uniform_genes(self.problem) if self.settings.seed_uniform else self.initial[:0]
        out, seen = [], set()
        for group in (self.initial, uni):
            if not len(group):
                continue
            ok = self.problem.feasible(self.problem.costs(group)) if self.problem.budgets else np.ones(len(group), bool)
            rows = []
            for r, fit in zip(group, ok):
                key = tuple(int(g) for g in r)
                if fit and key not in seen:
                    seen.add(key)
                    rows.append(key)
            room = self.settings.population - len(out)
            if len(rows) > room:  # evenly spread, the last (widest) kept
                rows = [rows[i] for i in np.unique(np.linspace(len(rows) - 1, 0, max(room, 0)).round().astype(int))]
            out.extend(rows)
        return np.array(out, dtype=np.int64).reshape(-1, self.problem.n_genes)

    def _initial(self) -> list:
        want = self.settings.population
        pop, seen = [], set()
        for row in self.seeds():
            seen.add(tuple(int(g) for g in row))
            pop.append(self.toolbox.individual(row))
        for _ in range(ATTEMPTS_PER_CHILD):
            if len(pop) >= want:
                break
            for ind in self.toolbox.population(want - len(pop)):
                if tuple(ind) not in seen:
                    seen.add(tuple(ind))
                    pop.append(ind)
        return pop

    def _breed(self) -> list:
        """Mutants and crossovers of the elite: feasible (shrunk if needed) and never seen before.

        Children are made and repaired in batches; a batch's duplicates are made again, for at
        most ``ATTEMPTS_PER_CHILD`` rounds, so a nearly full neighbourhood cannot loop forever.
        """
        s = self.settings
        seen = set(self.cache)
        wanted = {self._mutant: s.mutations, self._crossover: s.crossovers}
        kept: dict = {make: [] for make in wanted}
        for _ in range(ATTEMPTS_PER_CHILD):
            with self._own_random():
                batch = [(make, child) for make, count in wanted.items()
                         for child in (make() for _ in range(count - len(kept[make])))
                         if child is not None]
            if not batch:
                break
            genes = self.toolbox.repair(np.array([c for _, c in batch], dtype=np.int64))
            for (make, _), row in zip(batch, genes):
                key = tuple(int(g) for g in row)
                if key not in seen:
                    seen.add(key)
                    kept[make].append(self.toolbox.individual(key))
        return [child for make in wanted for child in kept[make]]

    def _mutant(self):
        child = self.toolbox.clone(random.choice(self.elite))
        (child,) = self.toolbox.mutate(child)
        return child

    def _crossover(self):
        if len(self.elite) < 2:
            return None
        a, b = (self.toolbox.clone(p) for p in random.sample(self.elite, 2))
        child, _ = self.toolbox.mate(a, b)
        return child

    # -- loop -------------------------------------------------------------------------------
    def _record(self, evals: int) -> None:
        stats = tools.Statistics(key=lambda ind: ind.fitness.values[0])
        stats.register("max", np.max)
        stats.register("avg", np.mean)
        stats.register("min", np.min)
        scores = {f"score_{k}": float(v) for k, v in stats.compile(self.population).items()} \
            if self.population else {}
        objective = self.settings.objectives[0]
        best = best_candidate(self.candidates, objective)
        self.logbook.record(gen=self.generation, evals=evals, evaluated=len(self.candidates),
                            **scores, best_score=best["score"], best_id=best["id"],
                            front_size=len(pareto_front(self.candidates, self.settings.objectives)))

    def _finish_generation(self, evals: int) -> None:
        self.elite = self.toolbox.select(self.elite + self.population)
        self._record(evals)
        if self.on_generation is not None:
            self.on_generation(self.state())

    def run(self) -> SearchResult:
        if self.generation < 0:
            self.generation = 0
            self.population = self._initial()
            self._finish_generation(self._evaluate(self.population, 0))
        while self.generation + 1 < self.settings.generations:
            self.generation += 1
            self.population = self._breed()
            self._finish_generation(self._evaluate(self.population, self.generation))
        return self.result()

    def result(self) -> SearchResult:
        objs = self.settings.objectives
        return SearchResult(tuple(self.candidates), tuple(pareto_front(self.candidates, objs)),
                            best_candidate(self.candidates, objs[0]), tuple(dict(r) for r in self.logbook),
                            self.state())

    # -- state ------------------------------------------------------------------------------
    def state(self) -> dict:
        """A JSON-ready snapshot from which :func:`resume_search` continues."""
        return {
            "format": STATE_FORMAT,
            "seed": self.seed,
            "settings": self.settings.to_dict(),
            "choices": [list(ch) for ch in self.problem.choices],
            "budgets": dict(self.problem.budgets),
            "generation": self.generation,
            "finished": self.generation + 1 >= self.settings.generations,
            "elite": [list(map(int, ind)) for ind in self.elite],
            "population": [list(map(int, ind)) for ind in self.population],
            "candidates": [dict(c) for c in self.candidates],
            "logbook": [dict(r) for r in self.logbook],
            "rng": {"numpy": self.rng.bit_generator.state,
                    "random": _random_state_to_json(self.random_state)},
        }

    def restore(self, state: Mapping[str, Any]) -> None:
        if state.get("format") != STATE_FORMAT:
            raise ValueError(f"state format {state.get('format')!r} is not {STATE_FORMAT!r}")
        if not self.settings.matches(state["settings"]):
            raise ValueError(f"the saved search has settings={state['settings']!r}, not {self.settings.to_dict()!r}")
        mine = {"seed": self.seed, "choices": [list(ch) for ch in self.problem.choices],
                "budgets": dict(self.problem.budgets)}
        for key, value in mine.items():
            if state[key] != value:
                raise ValueError(f"the saved search has {key}={state[key]!r}, not {value!r}")
        self.rng.bit_generator.state = state["rng"]["numpy"]
        self.random_state = _random_state_from_json(state["rng"]["random"])
        self.candidates = [dict(c) for c in state["candidates"]]
        self.cache = {tuple(c["genes"]): c for c in self.candidates}
        for rec in state["logbook"]:
            self.logbook.record(**rec)
        self.generation = int(state["generation"])
        self.population = [self.toolbox.individual(g) for g in state["population"]]
        self.elite = [self.toolbox.individual(g) for g in state["elite"]]
        for ind in self.population + self.elite:
            ind.fitness.values = self.toolbox.fitness_values(self.cache[tuple(ind)])


def run_search(problem: Problem, settings: EvolutionSettings = EvolutionSettings(), *, seed: int = 0,
               map_fn: Callable = map, on_generation: Callable[[dict], None] | None = None,
               initial=()) -> SearchResult:
    """Search ``problem`` with ``settings``; budgets are checked before any evaluation.

    ``map_fn(fitness_fn, channel_tuples)`` evaluates a generation's new vectors (builtin ``map`` by
    default; an actor pool's map for parallel evaluation). ``on_generation(state)`` is called after
    every generation with a JSON-ready state. ``initial``: channel vectors (e.g. a uniform network
    at the budget, criterion-pruned networks) the initial population starts with; those over a
    budget are left out.
    """
    return _Search(problem, settings, seed, map_fn, on_generation, initial).run()


def resume_search(problem: Problem, settings: EvolutionSettings, state: Mapping[str, Any], *,
                  map_fn: Callable = map, on_generation: Callable[[dict], None] | None = None
                  ) -> SearchResult:
    """Continue a search from a ``state`` given to ``on_generation``; the problem, settings and seed
    must be those it was made with."""
    search = _Search(problem, settings, int(state["seed"]), map_fn, on_generation)
    search.restore(state)
    return search.run()
