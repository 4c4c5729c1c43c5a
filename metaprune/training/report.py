"""The scratch-training report: a table, Kendall's tau of proxy vs scratch top-1, and a plot."""
from __future__ import annotations

import math
from pathlib import Path

from ..units import format_count


def kendall(rows: list[dict]) -> dict:
    """Kendall's tau between proxy top-1 (search) and scratch test top-1, over rows with both."""
    from scipy.stats import kendalltau

    pairs = [(r["proxy_top1"], r["test_top1"]) for r in rows
             if r.get("proxy_top1") is not None and r.get("test_top1") is not None]
    if len(pairs) < 2:
        return {"tau": None, "p_value": None, "n": len(pairs)}
    res = kendalltau([p for p, _ in pairs], [t for _, t in pairs])
    tau, p = float(res.statistic), float(res.pvalue)
    return {"tau": None if math.isnan(tau) else tau, "p_value": None if math.isnan(p) else p, "n": len(pairs)}


def _fmt(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)


def _pct(v, spec: str = ".2f") -> str:
    return "-" if v is None else format(100 * v, spec)


def format_table(rows: list[dict]) -> str:
    """Fixed-width tables, one per budget (the networks sharing a uniform-width baseline, then the
    baseline), one line per network; accuracies in percent; ``Δ base`` is the paired difference
    against the uniform baseline and ``p`` its paired t-test p-value over seeds."""
    head = (f"{'name':22s} {'kind':8s} {'MACs':>8s} {'params':>8s} {'lat ms':>7s} {'proxy':>7s} "
            f"{'top1 %':>7s} {'±':>5s} {'top5 %':>7s} {'epochs':>6s} {'wall s':>7s} {'Δ base':>7s} {'p':>6s}")
    groups = budget_groups(rows)
    blocks = []
    for members in groups.values():
        base = next((r for r in members if r.get("kind") == "baseline"), None)
        title = f"budget: {format_count(base['macs'])} MACs (uniform baseline {base['name']})" if base else "no baseline"
        blocks.append(title + "\n" + _table(head, members))
    return "\n\n".join(blocks) if len(blocks) > 1 else _table(head, rows)


def budget_groups(rows: list[dict]) -> dict[str | None, list[dict]]:
    """Rows by budget: each uniform baseline with the networks trained against it, searched first,
    the baseline last (key: the baseline's name)."""
    groups: dict = {}
    for r in rows:
        key = r["name"] if r.get("kind") == "baseline" else r.get("baseline")
        groups.setdefault(key, []).append(r)
    for members in groups.values():
        members.sort(key=lambda r: (r.get("kind") == "baseline", r.get("kind") != "searched"))
    return groups


def _table(head: str, rows: list[dict]) -> str:
    lines = [head]
    for r in rows:
        top1 = _pct(r.get("test_top1"))
        lines.append(f"{r['name'][:22]:22s} {r['kind']:8s} {format_count(r['macs']):>8s} "
                     f"{format_count(r['params']):>8s} {_fmt(r.get('latency_ms')):>7s} "
                     f"{_pct(r.get('proxy_top1')):>7s} {top1:>7s} {_pct(r.get('test_top1_std')):>5s} "
                     f"{_pct(r.get('test_top5')):>7s} {str(r.get('epochs')):>6s} {_fmt(r.get('wall_s'), '.1f'):>7s} "
                     f"{_pct(r.get('delta_top1'), '+.2f'):>7s} {_fmt(r.get('delta_p'), '.3f'):>6s}")
    return "\n".join(lines)


def plot(rows: list[dict], path: str | Path, tau: dict) -> Path | None:
    """Proxy top-1 against scratch test top-1 with Kendall's tau in the title; None if nothing to plot."""
    pts = [r for r in rows if r.get("proxy_top1") is not None and r.get("test_top1") is not None]
    if not pts:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..store.fileio import atomic_write

    fig, ax = plt.subplots(figsize=(5, 4))
    for kind, marker in (("searched", "o"), ("baseline", "s")):
        sel = [r for r in pts if r["kind"] == kind]
        if sel:
            ax.scatter([100 * r["proxy_top1"] for r in sel], [100 * r["test_top1"] for r in sel], marker=marker,
                       label=kind)
    for r in pts:
        ax.annotate(r["name"], (100 * r["proxy_top1"], 100 * r["test_top1"]), fontsize=7)
    ax.set_xlabel("proxy top-1 (%, PruningNet weights, search split)")
    ax.set_ylabel("scratch test top-1 (%)")
    t = tau.get("tau")
    ax.set_title(f"Kendall's tau = {t:.3f} (n={tau['n']})" if t is not None else f"n={tau['n']}")
    ax.legend()
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return out


def plot_budgets(rows: list[dict], path: str | Path) -> Path | None:
    """Test top-1 (mean +- std over seeds) of every network, one panel per budget (the networks
    sharing a uniform baseline), coloured by kind; None if nothing finished."""
    groups = budget_groups([r for r in rows if r.get("test_top1") is not None])
    if not groups:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..store.fileio import atomic_write

    fig, axes = plt.subplots(1, len(groups), figsize=(3.2 + 2.2 * max(len(g) for g in groups.values()) * len(groups)
                                                      / 3, 3.6), squeeze=False)
    colours = {"searched": "#2563eb", "baseline": "#f59e0b"}
    for ax, members in zip(axes[0], groups.values()):
        x = range(len(members))
        ax.bar(x, [100 * r["test_top1"] for r in members], yerr=[100 * (r.get("test_top1_std") or 0) for r in members],
               color=[colours.get(r["kind"], "#9ca3af") for r in members], capsize=3)
        ax.set_xticks(list(x), [r["kind"] for r in members], rotation=45, ha="right", fontsize=8)
        lo = min(100 * (r["test_top1"] - (r.get("test_top1_std") or 0)) for r in members)
        hi = max(100 * (r["test_top1"] + (r.get("test_top1_std") or 0)) for r in members)
        ax.set_ylim(max(0, lo - 2), min(100, hi + 1))
        macs = max(r["macs"] for r in members)
        ax.set_title(f"<= {format_count(macs)} MACs", fontsize=9)
    axes[0][0].set_ylabel("test top-1 % (mean, std over seeds)")
    fig.tight_layout()
    out = atomic_write(path, lambda p: fig.savefig(p, format="png", dpi=120))
    plt.close(fig)
    return out
