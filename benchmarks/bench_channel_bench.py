"""Our searches against a published ground truth: Channel-Bench-Macro as an oracle.

Channel-Bench-Macro (github.com/xiusu/Channel-Bench-Macro; no licence file, so nothing of it is in
this repository: pass the folder holding its ``Results_MobileNet.json`` / ``Results_ResNet.json``)
holds the CIFAR-10 test accuracy (3 seeds, their mean) of all 4^7 = 16,384 width vectors of a
7-layer MobileNet-style and a ResNet-style space (each layer at 0.25/0.5/0.75/1.0 of its width),
with their FLOPs. Here each vector's table mean is the fitness (a perfect proxy) and its FLOPs the
cost, so what is measured is the search alone:

* ``constrained``: evolution's MetaPruning search (DEAP) under a FLOPs budget, with its initial
  population seeded with the uniform vectors that fit (``seed_uniform``, the default) and without;
* ``pareto``: evolution's NSGA-II search over (accuracy, FLOPs), no budget, read at each budget;
* ``random``: uniformly random distinct vectors under the budget (for ``pareto``: from the whole
  table), as many as the search evaluated, per seed.

At each budget (30/40/50% of the largest FLOPs, and the FLOPs of the uniform 0.5x and 0.75x
vectors, where the paper compares with uniform) it reports the best table accuracy found, the
table's best under the budget (the oracle), the widest uniform vector under it, the found best's
rank among the vectors under the budget (top %), the evaluations used and when the best was first
evaluated; for the Pareto search also the hypervolume of its front against the table's true front.

    .venv/bin/python benchmarks/bench_channel_bench.py /path/to/Channel-Bench-Macro --seeds 10 \\
        --json benchmarks/results/channel_bench.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from evolution import EvolutionSettings, Problem, hypervolume, run_search
from evolution.pareto import nondominated_mask

SPACES = ("MobileNet", "ResNet")
FRACTIONS = (0.3, 0.4, 0.5)
LEVELS = 4  # widths 0.25, 0.5, 0.75, 1.0 -> genes 1..4
GENES = 7


def load_table(folder: Path, space: str) -> dict[str, np.ndarray]:
    """Arrays indexed by the vector's base-4 number: mean accuracy, FLOPs, params, 3 seeds' accuracies."""
    f = folder / f"Results_{space}.json"
    if not f.is_file():
        raise SystemExit(f"{f} is missing; accepted: the folder of a Channel-Bench-Macro clone "
                         "(Results_MobileNet.json and Results_ResNet.json)")
    try:
        doc = json.loads(f.read_text())
    except (OSError, ValueError) as e:
        raise SystemExit(f"{f} is not Channel-Bench-Macro's JSON: {e}") from None
    n = LEVELS ** GENES
    if not isinstance(doc, dict) or len(doc) != n:
        raise SystemExit(f"{f} holds {len(doc) if isinstance(doc, dict) else 'no'} vectors; accepted: {n}")
    mean, flops, params = np.zeros(n), np.zeros(n, dtype=np.int64), np.zeros(n, dtype=np.int64)
    accs = np.zeros((n, 3))
    for key, row in doc.items():
        i = index_of([int(c) for c in key])
        mean[i], flops[i], params[i] = row["mean"], row["flops"], row["params"]
        accs[i] = row["acc"]
    return {"mean": mean, "flops": flops, "params": params, "acc": accs}


def index_of(channels) -> np.ndarray | int:
    """Base-4 index of width vectors (genes 1..4), vectorised over rows."""
    c = np.asarray(channels, dtype=np.int64) - 1
    w = LEVELS ** np.arange(GENES - 1, -1, -1)
    return c @ w if c.ndim == 2 else int(c @ w)


def vector_of(index: int) -> str:
    return "".join(str(1 + (index // LEVELS ** (GENES - 1 - g)) % LEVELS) for g in range(GENES))


def make_problem(table, budget: float | None, fitness: np.ndarray) -> Problem:
    def cost(channels: np.ndarray) -> dict[str, np.ndarray]:
        i = index_of(channels)
        return {"flops": table["flops"][i], "params": table["params"][i]}

    return Problem([tuple(range(1, LEVELS + 1))] * GENES, cost, lambda ch: float(fitness[index_of(ch)]),
                   {"flops": budget} if budget is not None else {})


def first_best(candidates, budget: float | None) -> tuple[dict, int]:
    """The best candidate under ``budget`` and how many evaluations it took to first meet it."""
    pool = [c for c in candidates if budget is None or c["flops"] <= budget]
    best = max(pool, key=lambda c: (c["score"], -c["id"]))
    return best, best["id"] + 1


def summary(xs: list[float]) -> dict:
    return {"mean": round(statistics.mean(xs), 4), "std": round(statistics.stdev(xs), 4) if len(xs) > 1 else 0.0,
            "min": round(min(xs), 4), "max": round(max(xs), 4)}


def sign_test(wins: int, losses: int) -> float | None:
    """Two-sided sign test of wins against losses (ties dropped); None without any."""
    from scipy.stats import binomtest

    return round(float(binomtest(wins, wins + losses).pvalue), 4) if wins + losses else None


def hv(points: np.ndarray, ref: np.ndarray) -> float:
    return hypervolume(points, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("path", help="folder holding Results_MobileNet.json and Results_ResNet.json")
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--spaces", default=",".join(SPACES))
    ap.add_argument("--population", type=int, default=50)
    ap.add_argument("--parents", type=int, default=10)
    ap.add_argument("--children", type=int, default=25, help="mutations and crossovers each per generation")
    ap.add_argument("--generations", type=int, default=20)
    ap.add_argument("--fitness", choices=("mean", "seed0"), default="mean",
                    help="the search's fitness: the table's 3-seed mean, or only its first seed (a noisy "
                         "proxy); results are always read as the mean")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if args.seeds < 1 or args.population < 2 or args.generations < 1:
        raise SystemExit("--seeds >= 1, --population >= 2 and --generations >= 1 are accepted")
    folder = Path(args.path)
    settings = EvolutionSettings(population=args.population, parents=args.parents, mutations=args.children,
                                 crossovers=args.children, generations=args.generations, objectives=("flops",))
    report = {"settings": settings.to_dict(), "fitness": args.fitness, "seeds": args.seeds, "spaces": {}}
    t0 = time.time()
    for space in args.spaces.split(","):
        table = load_table(folder, space)
        fitness = table["mean"] if args.fitness == "mean" else table["acc"][:, 0]
        mean, flops = table["mean"], table["flops"]
        top = float(flops.max())
        uni = {k: index_of([k] * GENES) for k in range(1, LEVELS + 1)}
        budgets = {f"{int(100 * f)}%": f * top for f in FRACTIONS}
        budgets.update({f"uniform {k / LEVELS:.2f}x ({100 * flops[uni[k]] / top:.1f}%)": float(flops[uni[k]])
                        for k in (2, 3)})
        rows = {}
        # NSGA-II once per seed over the whole range, read at every budget
        pareto_runs, pareto_hv, random_hv = [], [], []
        pts_all = np.stack([100 - mean, flops / top], axis=1)
        ref = np.array([100 - mean.min() + 1e-9, 1.0 + 1e-9])
        true_hv = hv(pts_all[nondominated_mask(pts_all)], ref)
        for seed in range(args.seeds):
            res = run_search(make_problem(table, None, fitness), replace(settings, strategy="pareto"), seed=seed)
            cands = [{**c, "score": float(mean[index_of(c["channels"])])} for c in res.candidates]
            pareto_runs.append(cands)
            idx = np.array([index_of(c["channels"]) for c in cands])
            pareto_hv.append(hv(pts_all[idx], ref) / true_hv)
            rnd = np.random.default_rng(10_000 + seed).choice(len(mean), size=len(cands), replace=False)
            random_hv.append(hv(pts_all[rnd], ref) / true_hv)
        for name, budget in budgets.items():
            feasible = flops <= budget
            oracle_i = int(np.flatnonzero(feasible)[np.argmax(mean[feasible])])
            k_uni = max(k for k in uni if flops[uni[k]] <= budget)
            row = {"budget_flops": int(budget), "feasible_vectors": int(feasible.sum()),
                   "oracle": {"vector": vector_of(oracle_i), "mean": round(float(mean[oracle_i]), 3),
                              "flops": int(flops[oracle_i])},
                   "uniform": {"vector": vector_of(uni[k_uni]), "mean": round(float(mean[uni[k_uni]]), 3),
                               "flops": int(flops[uni[k_uni]])},
                   "share_beating_uniform": round(float((mean[feasible] > mean[uni[k_uni]]).mean()), 4)}
            sorted_feasible = np.sort(mean[feasible])[::-1]

            def top_pct(acc: float) -> float:  # share of vectors under the budget strictly better
                return 100.0 * float(np.searchsorted(-sorted_feasible, -acc, side="left")) / len(sorted_feasible)

            for method in ("constrained", "constrained-no-uniform-seeds", "pareto"):
                best, evals, first, pct, rbest, rpct, hit = [], [], [], [], [], [], 0
                for seed in range(args.seeds):
                    if method == "pareto":
                        cands = pareto_runs[seed]
                        pool = np.arange(len(mean))
                    else:
                        s = replace(settings, seed_uniform=method == "constrained")
                        res = run_search(make_problem(table, budget, fitness), s, seed=seed)
                        cands = [{**c, "score": float(mean[index_of(c["channels"])])} for c in res.candidates]
                        pool = np.flatnonzero(feasible)
                    b, when = first_best(cands, budget)
                    best.append(b["score"])
                    evals.append(len(cands))
                    first.append(when)
                    pct.append(top_pct(b["score"]))
                    hit += int(b["score"] >= mean[oracle_i])
                    rng = np.random.default_rng(20_000 + seed)
                    draw = rng.choice(pool, size=min(len(cands), len(pool)), replace=False)
                    draw = draw[flops[draw] <= budget]
                    r = float(mean[draw].max()) if len(draw) else float("nan")
                    rbest.append(r)
                    rpct.append(top_pct(r))
                wins = sum(a > r for a, r in zip(best, rbest))
                ties = sum(a == r for a, r in zip(best, rbest))
                row[method] = {"best_mean": summary(best),
                               "vs_uniform": round(statistics.mean(best) - mean[uni[k_uni]], 3),
                               "vs_oracle": round(statistics.mean(best) - mean[oracle_i], 3),
                               "oracle_found": f"{hit}/{args.seeds}", "top_pct": summary(pct),
                               "evaluations": summary(evals), "first_evaluation_of_best": summary(first),
                               "random_same_evaluations": {"best_mean": summary(rbest), "top_pct": summary(rpct)},
                               "wins_ties_losses_vs_random": [wins, ties, args.seeds - wins - ties],
                               "sign_test_p_vs_random": sign_test(wins, args.seeds - wins - ties)}
            rows[name] = row
        report["spaces"][space] = {"max_flops": int(top), "budgets": rows,
                                   "pareto_hypervolume_vs_true_front": summary(pareto_hv),
                                   "random_hypervolume_vs_true_front": summary(random_hv)}
        print(f"== {space} (max {top / 1e6:.1f}M FLOPs); NSGA-II front hypervolume / true front "
              f"{summary(pareto_hv)['mean']:.4f} (random, same evaluations, {summary(random_hv)['mean']:.4f})")
        print(f"{'budget':>22} {'oracle':>7} {'uniform':>7} {'method':>30} {'best':>14} {'top %':>6} "
              f"{'evals':>6} {'random':>14} {'W/T/L':>8} {'sign p':>6}")
        for name, row in rows.items():
            for method in ("constrained", "constrained-no-uniform-seeds", "pareto"):
                m = row[method]
                print(f"{name:>22} {row['oracle']['mean']:7.2f} {row['uniform']['mean']:7.2f} {method:>30} "
                      f"{m['best_mean']['mean']:7.3f}+-{m['best_mean']['std']:.3f} {m['top_pct']['mean']:6.2f} "
                      f"{m['evaluations']['mean']:6.0f} {m['random_same_evaluations']['best_mean']['mean']:7.3f}+-"
                      f"{m['random_same_evaluations']['best_mean']['std']:.3f} "
                      f"{'/'.join(map(str, m['wins_ties_losses_vs_random'])):>8} "
                      f"{m['sign_test_p_vs_random'] if m['sign_test_p_vs_random'] is not None else '-':>6}")
        sys.stdout.flush()
    report["wall_s"] = round(time.time() - t0, 1)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    print(f"wall {report['wall_s']} s")


if __name__ == "__main__":
    main()
