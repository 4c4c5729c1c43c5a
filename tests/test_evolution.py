"""The evolutionary search on a real space's cost model with a smooth, deterministic fitness."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest

from evolution import BudgetError, EvolutionSettings, Problem, hypervolume, resume_search, run_search
from evolution.pareto import nondominated_mask
from evolution.sampling import repair, sample
from pruningnet.cost import cost_model
from pruningnet.spaces import get_space

SMALL = EvolutionSettings(population=16, parents=4, mutations=8, crossovers=8, generations=5)


@pytest.fixture(scope="module")
def space():
    return get_space("mobilenet_v2", input_size=32, small_input=True, num_classes=10, in_channels=1)


class CountingFitness:
    """Mean square-root width: smooth, rises with every unit; counts calls per vector."""

    def __init__(self, space):
        self.max = np.array([u.max for u in space.units], dtype=np.float64)
        self.calls: dict[tuple, int] = {}

    def __call__(self, channels: tuple) -> float:
        self.calls[channels] = self.calls.get(channels, 0) + 1
        return float(np.mean(np.sqrt(np.array(channels) / self.max)))


def make_problem(space, budgets=None, fitness=None):
    cm = cost_model(space)
    return Problem([u.choices for u in space.units],
                   lambda x: {"macs": cm.macs(x), "params": cm.params(x)},
                   fitness or CountingFitness(space), budgets or {})


def test_constrained_respects_budgets_and_improves(space):
    cm = cost_model(space)
    budget = {"macs": 20_000_000, "params": 400_000}
    problem = make_problem(space, budget)
    result = run_search(problem, SMALL, seed=3)
    assert len(result.candidates) == 16 + 4 * 16
    for c in result.candidates:
        assert c["macs"] <= budget["macs"] and c["params"] <= budget["params"]
        assert c["macs"] == cm.macs(np.array([c["channels"]]))[0]
        assert c["channels"] == [space.units[g].choices[i] for g, i in enumerate(c["genes"])]
    assert result.best["score"] == max(c["score"] for c in result.candidates)
    log = result.logbook
    assert [r["gen"] for r in log] == list(range(5))
    assert log[-1]["best_score"] > log[0]["best_score"]


def test_pareto_front_is_nondominated(space):
    problem = make_problem(space)
    result = run_search(problem, EvolutionSettings(strategy="pareto", population=20, mutations=10,
                                                   crossovers=10, generations=4,
                                                   objectives=("macs", "params")), seed=0)
    front = result.front
    assert len(front) >= 5
    pts = np.array([[-c["score"], c["macs"], c["params"]] for c in result.candidates])
    front_ids = {c["id"] for c in front}
    for c in front:
        p = np.array([-c["score"], c["macs"], c["params"]])
        assert not np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
    for c in result.candidates:  # everything off the front is dominated
        if c["id"] not in front_ids:
            p = np.array([-c["score"], c["macs"], c["params"]])
            assert np.any(np.all(pts <= p, axis=1) & np.any(pts < p, axis=1))
    assert [c["macs"] for c in front] == sorted(c["macs"] for c in front)


def test_sampling_near_the_smallest_member_terminates(space):
    cm = cost_model(space)
    smallest = int(cm.macs(space.min_channels())[0])
    for budget in (smallest, smallest + 1000):
        problem = make_problem(space, {"macs": budget})
        genes = sample(problem, 30, np.random.default_rng(0))
        assert genes.shape == (30, len(space.units))
        assert np.all(problem.feasible(problem.costs(genes)))
    # A search whose only feasible vector is the smallest member ends with just that one.
    fitness = CountingFitness(space)
    result = run_search(make_problem(space, {"macs": smallest}, fitness), SMALL, seed=1)
    assert [c["genes"] for c in result.candidates] == [[0] * len(space.units)]
    assert list(fitness.calls.values()) == [1]


def test_repair_only_shrinks_over_budget_rows(space):
    problem = make_problem(space, {"macs": 10_000_000})
    top = problem.upper
    genes = np.stack([top, np.zeros_like(top)])
    fixed = repair(problem, genes, np.random.default_rng(0))
    assert np.all(fixed[0] <= top) and problem.costs(fixed)["macs"][0] <= 10_000_000
    assert problem.costs(fixed)["macs"][0] > 5_000_000  # shrinks towards the budget, not to the floor
    assert np.array_equal(fixed[1], genes[1])


@pytest.mark.parametrize("key,factor,side", [("macs", 0.5, "below"), ("macs", 2.0, "above"),
                                             ("params", 0.9, "below")])
def test_infeasible_budget_raises_with_range_before_any_work(space, key, factor, side):
    cm = cost_model(space)
    ends = {"macs": (cm.macs(space.min_channels())[0], cm.macs(space.max_channels())[0]),
            "params": (cm.params(space.min_channels())[0], cm.params(space.max_channels())[0])}
    low, high = ends[key]
    budget = int((low if side == "below" else high) * factor)
    fitness = CountingFitness(space)
    with pytest.raises(BudgetError) as err:
        run_search(make_problem(space, {key: budget}, fitness), SMALL)
    assert err.value.side == side and (err.value.low, err.value.high) == (low, high)
    assert f"{low:,}" in str(err.value) and f"{high:,}" in str(err.value)
    assert fitness.calls == {}


def test_each_vector_is_evaluated_once_through_map(space):
    fitness = CountingFitness(space)
    mapped = []

    def recording_map(fn, items):
        items = list(items)
        mapped.append(len(items))
        return map(fn, items)

    settings = EvolutionSettings(population=12, parents=3, mutations=10, crossovers=10, generations=6,
                                 mutation_prob=0.05)
    result = run_search(make_problem(space, {"macs": 8_000_000}, fitness), settings, seed=5,
                        map_fn=recording_map)
    assert set(fitness.calls.values()) == {1}
    assert len(fitness.calls) == len(result.candidates) == sum(mapped)
    assert len({tuple(c["genes"]) for c in result.candidates}) == len(result.candidates)


@pytest.mark.parametrize("strategy", ["constrained", "pareto"])
def test_resume_from_mid_run_state_equals_uninterrupted(space, strategy):
    settings = EvolutionSettings(strategy=strategy, population=16, parents=4, mutations=8,
                                 crossovers=8, generations=6)
    budgets = {"macs": 30_000_000}
    states = []
    full = run_search(make_problem(space, budgets), settings, seed=11,
                      on_generation=lambda s: states.append(json.dumps(s)))
    assert len(states) == 6
    random.seed(12345)  # the global RNG must not matter
    np.random.seed(12345)
    fitness = CountingFitness(space)
    mid = json.loads(states[2])
    resumed = resume_search(make_problem(space, budgets, fitness), settings, mid)
    assert resumed.candidates == full.candidates
    assert resumed.front == full.front
    assert resumed.logbook == full.logbook
    assert len(fitness.calls) == len(full.candidates) - len(mid["candidates"])  # no re-evaluation
    other = run_search(make_problem(space, budgets), settings, seed=12)
    assert [c["genes"] for c in other.candidates] != [c["genes"] for c in full.candidates]


def test_resume_refuses_other_settings(space):
    states = []
    run_search(make_problem(space), SMALL, seed=0, on_generation=states.append)
    with pytest.raises(ValueError, match="settings"):
        resume_search(make_problem(space), EvolutionSettings(population=8), states[1])


def test_bad_settings_name_the_key(space):
    with pytest.raises(ValueError, match="mutation_prob"):
        run_search(make_problem(space), EvolutionSettings(mutation_prob=1.5))
    with pytest.raises(ValueError, match="latency_ms"):
        run_search(make_problem(space), EvolutionSettings(strategy="pareto", objectives=("latency_ms",)))


def test_hypervolume_and_nondominated_mask():
    pts = np.array([[1.0, 3.0], [2.0, 2.0], [3.0, 1.0], [3.0, 3.0]])
    assert nondominated_mask(pts).tolist() == [True, True, True, False]
    assert hypervolume(pts, np.array([4.0, 4.0])) == pytest.approx(6.0)
    assert hypervolume(pts, np.array([0.5, 0.5])) == 0.0


class Unevenness:
    """Width minus five times the spread of the per-gene width fractions: uniform vectors are the
    peaks, which random sampling and mutation almost never hit exactly."""

    def __init__(self, space):
        self.max = np.array([u.max for u in space.units], dtype=np.float64)

    def __call__(self, channels: tuple) -> float:
        r = np.array(channels) / self.max
        return float(r.mean() - 5.0 * r.std())


def test_uniform_seeding_makes_the_search_at_least_as_good_as_uniform(space):
    from evolution.sampling import uniform_genes

    budget = {"macs": 12_000_000}
    problem = make_problem(space, budget, Unevenness(space))
    uni = uniform_genes(problem)
    assert (uni[0] == 0).all() and (uni[-1] == problem.upper).all()
    assert (np.diff(problem.costs(uni)["macs"]) > 0).all()  # narrowest first, each level wider
    ok = problem.feasible(problem.costs(uni))
    assert 1 <= ok.sum() < len(uni)
    best_uniform = max(problem.fitness_fn(tuple(int(c) for c in row)) for row in problem.channels(uni[ok]))
    few = EvolutionSettings(population=12, parents=4, mutations=4, crossovers=4, generations=3)
    on = run_search(problem, few, seed=0)
    gen0 = {tuple(c["genes"]) for c in on.candidates if c["generation"] == 0}
    assert {tuple(int(g) for g in row) for row in uni[ok]} <= gen0  # every uniform vector that fits
    assert all(c["macs"] <= budget["macs"] for c in on.candidates)
    assert on.best["score"] >= best_uniform
    off = run_search(problem, dataclasses_replace(few, seed_uniform=False), seed=0)
    assert off.best["score"] < best_uniform - 0.05  # without the seeds the same search misses it
    # a caller's seed vector is in generation 0; one over the budget is left out; an off-grid one refused
    widest = tuple(u.choices[-1] for u in space.units)
    mine = tuple(u.choices[len(u.choices) // 3] for u in space.units)
    seeded = run_search(problem, few, seed=0, initial=[mine, widest])
    first = [tuple(c["channels"]) for c in seeded.candidates if c["generation"] == 0]
    mine_fits = problem.feasible(problem.costs(np.array([[len(u.choices) // 3 for u in space.units]])))[0]
    assert (mine in first) == bool(mine_fits)
    assert widest not in first
    with pytest.raises(ValueError, match="is not one of its choices"):
        run_search(problem, few, seed=0, initial=[tuple(c + 1 for c in widest)])


def dataclasses_replace(settings, **kw):
    import dataclasses

    return dataclasses.replace(settings, **kw)
