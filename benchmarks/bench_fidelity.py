"""Proxy fidelity: does the PruningNet's ranking predict scratch-trained accuracy, beyond MACs?

Samples ``--n-space`` vectors across the space (stratified: one per equal-width MACs bin) and
``--n-band`` more inside one MACs band (``--band-width``, +-10% by default), scores each with the run's PruningNet (proxy top-1 on the whole search split, BN re-estimated),
trains each from scratch with one recipe as Ray Tune trials, and reports Kendall's tau of proxy vs
scratch test top-1 over all vectors and within the band, next to the tau of MACs alone.

Run by hand, e.g.:
  .venv/bin/python benchmarks/bench_fidelity.py --run runs/quickstart-... --epochs 4 --images 3500 \
      --seeds 2 --json /tmp/fid.json --plot docs/fidelity.png
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy.stats import kendalltau

from metaprune.evaluation import bn_batches, evaluate
from metaprune.store.runs import open_run
from metaprune.training.loop import scratch_data
from metaprune.training.plan import Candidate, trial_configs
from metaprune.training.recipe import load_train_config
from metaprune.training.runner import connect, run_trials
from pruningnet.cost import cost_model
from pruningnet.spec import make_spec
from recipe_flags import add_recipe_flags, recipe_overrides


def _uniform_draws(units, rng, k: int) -> np.ndarray:
    return np.stack([rng.choice(u.choices, size=k) for u in units], axis=1)


def _level_draws(units, rng, k: int) -> np.ndarray:
    """Vectors around a random width level: unit i takes choice index round(t * (n_i - 1) + noise),
    t ~ U(0, 1), so the draws cover the whole MACs range (uniform per-unit draws crowd its middle)."""
    t = rng.uniform(0, 1, size=(k, 1))
    cols = []
    for j, u in enumerate(units):
        n = len(u.choices)
        idx = np.clip(np.rint(t[:, 0] * (n - 1) + rng.normal(0, n / 4, size=k)), 0, n - 1).astype(int)
        cols.append(np.asarray(u.choices)[idx])
    return np.stack(cols, axis=1)


def sample(space, rng, n_space: int, n_band: int, band_center: float, band_width: float = 0.1):
    """``n_space`` vectors stratified over MACs (one per equal-width MACs bin between the narrowest
    and the widest network) and ``n_band`` uniform draws inside +-``band_width`` of one MACs value."""
    cm = cost_model(space)
    units = space.units
    lo_macs, hi_macs = int(cm.macs(space.min_channels())[0]), int(cm.macs(space.max_channels())[0])
    pool = np.concatenate([_level_draws(units, rng, 20000), _uniform_draws(units, rng, 20000)])
    pool_macs = cm.macs(pool)
    edges = np.linspace(lo_macs, hi_macs, n_space + 1)
    spread = []
    for a, b in zip(edges[:-1], edges[1:]):
        idx = np.flatnonzero((pool_macs >= a) & (pool_macs <= b))
        if len(idx):
            spread.append(pool[rng.choice(idx)])
    center = lo_macs + band_center * (hi_macs - lo_macs)
    band = []
    for _ in range(200):  # capped: 200 x 2,000 draws
        draws = _uniform_draws(units, rng, 2000)
        band.extend(draws[np.abs(cm.macs(draws) - center) <= band_width * center])
        if len(band) >= n_band:
            break
    if len(band) < n_band:
        raise SystemExit(f"--band-center {band_center}: only {len(band)} of 400,000 uniform draws fall within "
                         f"+-{band_width:.0%} of {center / 1e6:.2f}M MACs, {n_band} asked; move the centre "
                         "towards 0.5 or widen --band-width")
    return np.array(spread), np.array(band[:n_band]), center


def _tau(x, y) -> list:
    t = kendalltau(x, y)
    return [round(float(t.statistic), 3), round(float(t.pvalue), 3), len(x)]


def diagnostics(res: dict) -> dict:
    """What bounds the figures: how repeatable the scratch ranking itself is (tau between the first
    two seeds' top-1; no proxy can agree with scratch accuracy better than scratch agrees with
    itself), how much of the proxy is MACs (tau proxy vs MACs), and the spread of scratch top-1."""
    rows = [r for r in res["rows"] if r["test_top1"] is not None]
    out = {}
    for group, rs in (("all", rows), ("band", [r for r in rows if r["name"].startswith("band")])):
        two = [r for r in rs if len(r.get("test_top1_per_seed", [])) >= 2]
        if len(two) >= 3:
            out[f"tau_seed0_vs_seed1_{group}"] = _tau([r["test_top1_per_seed"][0] for r in two],
                                                      [r["test_top1_per_seed"][1] for r in two])
        k = min((len(r.get("test_top1_per_seed", [])) for r in rs), default=0)
        if k >= 3 and len(rs) >= 3:  # every pair of seeds, and each seed against the others' mean
            seeds = np.array([r["test_top1_per_seed"][:k] for r in rs])
            pairs = {f"{i}v{j}": _tau(seeds[:, i], seeds[:, j]) for i in range(k) for j in range(i + 1, k)}
            rest = [_tau(seeds[:, i], np.delete(seeds, i, axis=1).mean(axis=1)) for i in range(k)]
            out[f"tau_seed_pairs_{group}"] = pairs
            out[f"tau_seed_pairs_mean_{group}"] = round(float(np.nanmean([t[0] for t in pairs.values()])), 3)
            out[f"tau_seed_vs_rest_mean_{group}"] = round(float(np.nanmean([t[0] for t in rest])), 3)
        out[f"tau_proxy_vs_macs_{group}"] = _tau([r["proxy_top1"] for r in rs], [r["macs"] for r in rs])
    accs = [r["test_top1"] for r in rows]
    seed_gaps = [max(r["test_top1_per_seed"]) - min(r["test_top1_per_seed"]) for r in rows
                 if len(r.get("test_top1_per_seed", [])) >= 2]
    out["test_top1_range"] = [min(accs), max(accs)]
    if seed_gaps:
        out["mean_seed_gap"] = round(float(np.mean(seed_gaps)), 4)
    return out


def plot(res: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in res["rows"] if r["test_top1"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2))
    for ax, key, label in ((axes[0], "proxy_top1", "PruningNet proxy top-1 (%), search split"),
                           (axes[1], "macs", "MACs (M)")):
        for group, marker, color in (("space", "o", "tab:blue"), ("band", "^", "tab:orange")):
            g = [r for r in rows if r["name"].startswith(group)]
            x = [r[key] / 1e6 if key == "macs" else 100 * r[key] for r in g]
            y = [100 * r["test_top1"] for r in g]
            yerr = [100 * r.get("test_top1_std", 0.0) for r in g]
            width = round(100 * res.get("band_width", 0.1))
            name = ("across the space" if group == "space" else f"+-{width}% of {res['band_center_macs'] / 1e6:.1f}M MACs")
            ax.errorbar(x, y, yerr=yerr, fmt=marker, color=color, label=name, capsize=2, ms=5)
        t_all, t_band = res[f"tau_{key.split('_')[0]}_all"], res[f"tau_{key.split('_')[0]}_band"]
        ax.set_title(f"tau all {t_all[0]:+.2f} (p {t_all[1]:.2f}); band {t_band[0]:+.2f} (p {t_band[1]:.2f})",
                     fontsize=9)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"scratch test top-1 (%), {res['epochs']} epochs, {res['seeds']} seed(s)")
    axes[0].legend(fontsize=8)
    d = diagnostics(res)
    data = res.get("data", "mnist")  # results saved before the field was recorded are MNIST's
    title = ("Does the PruningNet proxy rank subnets as scratch training does? "
             f"({'MNIST' if data == 'mnist' else data}, small-input MobileNetV2)")
    if "tau_seed0_vs_seed1_all" in d:
        title += (f"\nceiling: scratch seed 0 vs seed 1 tau {d['tau_seed0_vs_seed1_all'][0]:+.2f} all, "
                  f"{d['tau_seed0_vs_seed1_band'][0]:+.2f} in the band")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _tau_fields(rows: list[dict]) -> dict:
    def tau(rs, key):
        rs = [r for r in rs if r["test_top1"] is not None]
        return _tau([r[key] for r in rs], [r["test_top1"] for r in rs])

    band_rows = [r for r in rows if r["name"].startswith("band")]
    return {"tau_proxy_all": tau(rows, "proxy_top1"), "tau_macs_all": tau(rows, "macs"),
            "tau_proxy_band": tau(band_rows, "proxy_top1"), "tau_macs_band": tau(band_rows, "macs")}


def _emit(res: dict, args) -> None:
    """Print the summary (all but the rows), then write --json and --plot when asked."""
    print(json.dumps({k: v for k, v in res.items() if k != "rows"}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    if args.plot:
        plot(res, args.plot)


#: the recipe fields a result records; two results mix only where these agree (files written before
#: the last four were recorded lack them, and are not compared on them)
RECIPE_KEYS = ("data", "epochs", "images", "warmup_epochs", "augment", "test_images", "recipe", "scratch_seed")


def _check_same_recipe(flag: str, mine: dict, saved: dict, saved_name: str, keys=RECIPE_KEYS) -> None:
    """Exit naming every field of ``keys`` that both results record and disagree on."""
    other = [k for k in keys if k in mine and k in saved and mine[k] != saved[k]]
    if other:
        raise SystemExit(f"{flag}: {', '.join(f'{k} {mine[k]!r}' for k in other)} differ from {saved_name}'s "
                         f"({', '.join(f'{k} {saved[k]!r}' for k in other)}); use its recipe flags")


def _saved_matching(path: str, flag: str, cands, channels) -> dict:
    """A saved --json whose vectors are exactly the re-drawn ones (names, MACs, channels), or exit."""
    res = json.loads(Path(path).read_text())
    if len(res["rows"]) != len(cands):
        raise SystemExit(f"{flag}: {len(res['rows'])} saved vectors, {len(cands)} re-drawn; use the saved run's "
                         "--seed/--n-space/--n-band/--band-center/--band-width")
    by_name = {c.name: c for c in cands}
    for r in res["rows"]:
        c = by_name.get(r["name"])
        if c is None or c.macs != r["macs"] or r.get("channels", channels[c.name]) != channels[c.name]:
            raise SystemExit(f"{flag}: vector {r['name']} does not match the saved one "
                             f"(MACs {r['macs']} saved, {c.macs if c else None} re-drawn); use the saved run's "
                             "--seed/--n-space/--n-band/--band-center/--band-width")
    return res


def rescore(args, cands, channels) -> None:
    """Replace the proxies of a saved result by this run's (the scratch side does not depend on the
    PruningNet); refuses unless the re-drawn vectors are the saved ones (same names and MACs)."""
    res = _saved_matching(args.rescore, "--rescore", cands, channels)
    by_name = {c.name: c for c in cands}
    for r in res["rows"]:
        c = by_name[r["name"]]
        r["proxy_top1_before"] = r["proxy_top1"]
        r["proxy_top1"], r["channels"] = c.proxy_top1, channels[c.name]
    res["proxy_run_before"], res["proxy_run"] = res.get("proxy_run", res["run"]), args.run
    res.update(_tau_fields(res["rows"]))
    res.update(diagnostics(res))
    _emit(res, args)


def add_seeds(res: dict, cands, per_seed: dict, args, wall_s: float) -> None:
    """Append the new seeds' top-1 to a saved result; a vector missing any seed loses its mean."""
    proxies = {c.name: c.proxy_top1 for c in cands}
    for r in res["rows"]:
        new = per_seed.get(r["name"], [])
        seeds = r["test_top1_per_seed"] + new
        whole = len(r["test_top1_per_seed"]) == res["seeds"] and len(seeds) == args.seeds
        r["test_top1_per_seed"] = seeds
        r["test_top1"] = float(np.mean(seeds)) if whole else None
        r["test_top1_std"] = float(np.std(seeds, ddof=1)) if whole else 0.0
    res["proxy_max_abs_diff"] = max(abs(proxies[r["name"]] - r["proxy_top1"]) for r in res["rows"])
    res["seeds_before"], res["seeds"] = res["seeds"], args.seeds
    res["added_seeds_run"], res["added_seeds_wall_s"] = args.run, wall_s
    res.update(_tau_fields(res["rows"]))
    res.update(diagnostics(res))
    _emit(res, args)


def merge(paths: list[str]) -> dict:
    """One result from several ``--json`` files of the same run and recipe (e.g. a second draw of
    ``--n-space`` vectors with another ``--seed``): rows renumbered per group in file order, a
    vector drawn twice refused, taus and diagnostics recomputed over the union. The recipe fields
    must match where both files record them (older files lack the last four); the runs may differ
    (each part's is recorded: proxies of two runs mix only if they are the same PruningNet, which
    ``--rescore`` shows)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    same = (*RECIPE_KEYS, "seeds")
    first = parts[0]
    for p, res in zip(paths[1:], parts[1:]):
        _check_same_recipe(f"--merge: {p}", res, first, paths[0], same)
    rows, seen, count = [], {}, {}
    for p, res in zip(paths, parts):
        for r in res["rows"]:
            key = tuple(r["channels"])
            if key in seen:
                raise SystemExit(f"--merge: {p}: vector {r['name']} is {seen[key]} again")
            group = r["name"].split("-")[0]
            name = f"{group}-{count.get(group, 0)}"
            count[group] = count.get(group, 0) + 1
            seen[key] = name
            rows.append({**r, "name": name, "drawn_as": f"{Path(p).name}:{r['name']}"})
    res = {**{k: next((r[k] for r in parts if k in r), None) for k in (*same, "sampling", "band_width")},
           "merged": [{"file": p, "run": r["run"], "proxy_run": r.get("proxy_run"),
                       "added_seeds_run": r.get("added_seeds_run"), "seed": r["seed"], "vectors": len(r["rows"]),
                       "wall_s": r.get("wall_s"), "added_seeds_wall_s": r.get("added_seeds_wall_s")}
                      for p, r in zip(paths, parts)],
           "band_center_macs": next((r["band_center_macs"] for r in parts
                                     if any(x["name"].startswith("band") for x in r["rows"])), first["band_center_macs"]),
           **_tau_fields(rows), "rows": rows}
    res.update(diagnostics(res))
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="the run directory (required unless --merge or --plot-only)")
    ap.add_argument("--n-space", type=int, default=16)
    ap.add_argument("--n-band", type=int, default=8)
    ap.add_argument("--band-center", type=float, default=0.5, help="fraction of the MACs range")
    ap.add_argument("--band-width", type=float, default=0.1, help="half-width of the band, fraction of its MACs")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--images", type=int, default=3500, help="training images per trial (0: all)")
    ap.add_argument("--test-images", type=int, default=1000, help="test images per trial (0: all)")
    ap.add_argument("--recipe", default="smoke", help="scratch recipe name or YAML (configs/train/)")
    add_recipe_flags(ap)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--seeds", type=int, default=2, help="scratch seeds per vector (top-1 averaged)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None, help="write the figure here, e.g. docs/fidelity.png")
    ap.add_argument("--plot-only", default=None, metavar="JSON", help="redraw --plot from a saved --json")
    ap.add_argument("--add-seeds", default=None, metavar="JSON",
                    help="keep a saved --json and train only the scratch seeds it lacks, up to --seeds (same "
                         "--run, vectors and recipe flags as the saved run); the result, all seeds, goes to --json")
    ap.add_argument("--rescore", default=None, metavar="JSON",
                    help="keep a saved --json's scratch results and rescore only the proxies with --run's "
                         "PruningNet (same space, --seed/--n-space/--n-band/--band-center as the saved run)")
    ap.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                    help="merge saved --json files of the same run and recipe into one (--json, --plot); "
                         "trains nothing")
    args = ap.parse_args()
    if args.merge:
        _emit(merge(args.merge), args)
        return
    if args.plot_only:
        res = json.loads(Path(args.plot_only).read_text())
        print(json.dumps(diagnostics(res), indent=1))
        plot(res, args.plot or "fidelity.png")
        return
    if not args.run:
        ap.error("--run is required")
    t0 = time.time()
    run = open_run(args.run)
    space, data = run.space, run.load_data()
    rng = np.random.default_rng(args.seed)
    spread, band, center = sample(space, rng, args.n_space, args.n_band, args.band_center, args.band_width)
    net = run.load_pruningnet()
    ec = run.config.eval
    batches = bn_batches(data, ec.bn_batches, ec.batch_size, run.seed, "cpu")
    cm = cost_model(space)
    cands, channels = [], {}
    for group, rows in (("space", spread), ("band", band)):
        for i, row in enumerate(rows):
            ch = dict(zip(space.unit_names, map(int, row)))
            proxy = evaluate(net, ch, data, max_images=None, batches=batches)["top1"]
            spec = make_spec(space, ch)
            channels[f"{group}-{i}"] = [int(v) for v in row]
            cands.append(Candidate(f"{group}-{i}", "searched", spec, int(cm.macs(ch)[0]),
                                   int(cm.params(ch)[0]), proxy_top1=proxy))
    if args.rescore:
        rescore(args, cands, channels)
        return
    overrides = {"recipe.max_train_images": args.images or None, "recipe.max_test_images": args.test_images or None}
    overrides.update(recipe_overrides(args))
    cfg = load_train_config(args.recipe, overrides, run_dir=args.run)
    trials = trial_configs(cands, cfg, "scratch-e", args.epochs, args.seeds, 1.0, 0.0)
    saved = None
    if args.add_seeds:
        saved = _saved_matching(args.add_seeds, "--add-seeds", cands, channels)
        mine = {"epochs": args.epochs, "images": args.images, "warmup_epochs": cfg.recipe.warmup_epochs,
                "augment": cfg.recipe.augment, "data": run.config.data.name, "test_images": args.test_images,
                "recipe": args.recipe, "scratch_seed": cfg.seed}
        _check_same_recipe("--add-seeds", mine, saved, "the saved run")
        if args.seeds <= saved["seeds"]:
            raise SystemExit(f"--add-seeds: --seeds {args.seeds}: the saved run has {saved['seeds']}; ask for more")
        trials = [t for t in trials if t["seed"] >= cfg.seed + saved["seeds"]]
    connect(None)
    sd = scratch_data(data, cfg.recipe, cfg.seed)
    storage = Path(args.run) / "fidelity"
    outcomes = run_trials(storage.resolve(), f"fidelity-{time.strftime('%H%M%S')}", trials, sd, cfg, 1.0, 0.0,
                          verbose=0)
    done: dict[str, dict[int, float]] = {}
    for o in outcomes:
        if o.error is None and o.metrics.get("epoch") == args.epochs:
            done.setdefault(o.trial["name"], {})[o.trial["seed"]] = float(o.metrics["test_top1"])
    per_seed = {name: [by_seed[k] for k in sorted(by_seed)] for name, by_seed in done.items()}
    if saved is not None:
        add_seeds(saved, cands, per_seed, args, round(time.time() - t0, 1))
        return
    rows = [{"name": c.name, "macs": c.macs, "channels": channels[c.name], "proxy_top1": c.proxy_top1,
             "test_top1": float(np.mean(per_seed[c.name])) if c.name in per_seed else None,
             "test_top1_std": float(np.std(per_seed[c.name], ddof=1)) if len(per_seed.get(c.name, [])) > 1 else 0.0,
             "test_top1_per_seed": per_seed.get(c.name, [])} for c in cands]
    res = {"run": args.run, "proxy_run": args.run, "data": run.config.data.name, "seed": args.seed,
           "epochs": args.epochs, "images": args.images, "seeds": args.seeds, "warmup_epochs": cfg.recipe.warmup_epochs,
           "augment": cfg.recipe.augment, "test_images": args.test_images, "recipe": args.recipe,
           "scratch_seed": cfg.seed,
           "sampling": "space: one per equal-width MACs bin; band: uniform draws", "band_center_macs": int(center),
           "band_width": args.band_width,
           **_tau_fields(rows), "wall_s": round(time.time() - t0, 1), "rows": rows}
    res.update(diagnostics(res))
    _emit(res, args)


if __name__ == "__main__":
    main()
