"""``metaprune pareto``: the front as a table and JSON, and a plot of every candidate with the front
and uniform-width baselines scored by the same proxy."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pruningnet.cost import cost_model
from pruningnet.errors import UserError

from ..store.fileio import atomic_write, write_json
from ..store.schemas import BASELINE_SCORES
from ..units import format_count
from .store import search_dir

BASELINES_FILE = "baselines.json"
PLOT_FILE = "pareto.png"


def front_table(front: list[dict]) -> str:
    """id, MACs, params, latency and proxy top-1 (and loss, where the search scored by it) of each
    front member, one per line."""
    by_loss = any("loss" in c for c in front)
    rows = [("id", "MACs", "params", "latency_ms", "proxy_top1") + (("proxy_loss (score)",) if by_loss else ())]
    for c in front:
        lat = f"{c['latency_ms']:.2f}" if c.get("latency_ms") is not None else "-"
        rows.append((str(c["id"]), format_count(c["macs"]), format_count(c["params"]), lat,
                     f"{100 * c['top1']:.2f}%") + ((f"{c['loss']:.4f}",) if by_loss else ()))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(v.rjust(w) for v, w in zip(r, widths)) for r in rows)


def uniform_levels(space) -> list[dict]:
    """The space's on-grid uniform-width networks, narrowest first: at each width level every unit
    takes its meta-training choice nearest that fraction of its max (the vectors a search's initial
    population starts with, :func:`evolution.sampling.uniform_genes`)."""
    from evolution import Problem
    from evolution.sampling import uniform_genes

    cm = cost_model(space)
    problem = Problem([u.choices for u in space.units], lambda x: {}, lambda c: 0.0)
    genes = uniform_genes(problem)
    chans = problem.channels(genes)
    macs, params = cm.macs(chans), cm.params(chans)
    out = []
    for g, row in enumerate(chans):
        ratio = float(np.mean([c / u.max for c, u in zip(row, space.units) if not u.fixed] or [1.0]))
        out.append({"ratio": round(ratio, 4), "on_grid": True, "channels": dict(zip(space.unit_names, map(int, row))),
                    "macs": int(macs[g]), "params": int(params[g])})
    return sorted(out, key=lambda b: b["macs"])


def baseline_vectors(space, macs_values: list[int], count: int, budgets: dict | None = None,
                     evaluated: list[dict] | None = None) -> list[dict]:
    """Up to ``count`` uniform-width networks spread over ``macs_values``' range (from the widest at or
    below its low end to the widest at or below its high end, evenly by rank): :func:`uniform_levels`
    and, when the search had a MACs budget, the on-grid uniform network nearest that budget
    (:meth:`~pruningnet.cost.CostModel.grid_uniform_for_budget`).

    They are on the space's grid (the PruningNet only trained on its choices) and every search starts
    from them (``seed_uniform``), so the front is never below a baseline the proxy scores higher.
    Given ``evaluated`` (the search's candidate records), only those the search evaluated are drawn
    (when it evaluated any): a population too small for every level got a thinned set.
    """
    if count <= 0 or not macs_values:
        return []
    pool = uniform_levels(space)
    if budgets and "macs" in budgets:
        cm = cost_model(space)
        try:
            ratio, ch, macs = cm.grid_uniform_for_budget(int(budgets["macs"]))
            if all(b["channels"] != ch for b in pool):
                pool.append({"ratio": round(ratio, 4), "on_grid": True, "channels": ch, "macs": macs,
                             "params": int(cm.params(ch)[0])})
        except UserError:
            pass
        pool.sort(key=lambda b: b["macs"])
    if evaluated:
        seen_channels = {json.dumps(c["channels"], sort_keys=True) for c in evaluated}
        pool = [b for b in pool if json.dumps(b["channels"], sort_keys=True) in seen_channels] or pool
    lo, hi = min(macs_values), max(macs_values)
    below = [i for i, b in enumerate(pool) if b["macs"] <= lo]
    first = below[-1] if below else 0  # the widest at or below the narrowest candidate
    last = max([i for i, b in enumerate(pool) if b["macs"] <= hi], default=0)
    span = pool[first:max(first, last) + 1]
    picks = np.unique(np.linspace(0, len(span) - 1, min(count, len(span))).round().astype(int))
    return [span[i] for i in picks]


def score_baselines(run_path: Path, space, vectors: list[dict], scorer_factory,
                    searched: list[dict] | None = None) -> list[dict]:
    """Proxy top-1 (and loss, when the search scored by it) of each baseline; cached in
    ``RUN/search/baselines.json`` by channel vector. A baseline the search evaluated (among
    ``searched``, candidate records) takes the search's score."""
    from ..store.runs import open_run

    f = search_dir(run_path) / BASELINES_FILE
    fingerprint = open_run(run_path).pruningnet_fingerprint()
    try:
        doc = BASELINE_SCORES.read(f) if f.exists() else {"baselines": []}
    except UserError:
        doc = {"baselines": []}  # a cache only: damaged, it is scored again (and rewritten)
    if doc.get("pruningnet") != fingerprint:
        doc = {"baselines": []}  # scored by another PruningNet: score again
    cache = {json.dumps(b["channels"], sort_keys=True): b for b in doc["baselines"]}
    known = {json.dumps(c["channels"], sort_keys=True): {k: c[k] for k in ("top1", "loss", "score") if k in c}
             for c in searched or []}
    by_loss = any("loss" in c for c in searched or [])  # the search's score (a cache may hold the other)
    scorer = None
    out = []
    for v in vectors:
        key = json.dumps(v["channels"], sort_keys=True)
        if key in known:
            cache[key] = {**v, **known[key]}
        elif key not in cache or (by_loss and "loss" not in cache[key]):
            scorer = scorer or scorer_factory()
            cache[key] = {**v, **_score_fields(scorer(tuple(v["channels"][u] for u in space.unit_names)))}
        out.append(cache[key] if by_loss else {k: x for k, x in cache[key].items() if k not in ("loss", "score")})
    write_json(f, {"pruningnet": fingerprint, "baselines": list(cache.values())})
    return out


def _score_fields(value) -> dict:
    """A scorer's value as record fields: ``top1``, or with the loss as the score ``top1``, ``loss``
    and ``score`` (minus the loss), as :func:`metaprune.search.store.candidate_record` stores them."""
    if isinstance(value, dict):
        return {"top1": value["top1"], "loss": round(float(value["loss"]), 6), "score": value["score"]}
    return {"top1": value}


def plot_front(path: Path, candidates: list[dict], front: list[dict], baselines: list[dict],
               title: str, score: str = "top1") -> Path:
    """The search's ``score`` against MACs: every candidate, the front, and the uniform baselines:
    proxy top-1, or for ``loss`` the proxy loss (lower is better, axis inverted), so the front is
    drawn by what chose it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_loss = score == "loss"
    y = (lambda r: r["loss"]) if by_loss else (lambda r: 100 * r["top1"])
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    ax.scatter([c["macs"] / 1e6 for c in candidates], [y(c) for c in candidates], s=10,
               color="0.7", label=f"candidates ({len(candidates)})")
    ax.plot([c["macs"] / 1e6 for c in front], [y(c) for c in front], "o-", ms=4,
            color="tab:blue", label=f"Pareto front ({len(front)})", drawstyle="steps-post")
    if baselines:
        b = sorted(baselines, key=lambda r: r["macs"])
        ax.plot([r["macs"] / 1e6 for r in b], [y(r) for r in b], "s--", ms=5,
                color="tab:orange", label="uniform width")
    ax.set_xlabel("MACs (M)  [the papers' FLOPs]")
    ax.set_ylabel("proxy loss (cross-entropy, lower is better)" if by_loss else "proxy top-1 (%)")
    if by_loss:
        ax.invert_yaxis()
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
    return path
