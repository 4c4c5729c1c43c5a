"""Commands ``search``, ``pareto`` and ``export``: search a run's PruningNet under budgets, inspect
the front, and export the pick."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import click

from pruningnet.errors import UserError

from ..units import parse_count
from .common import check_device, echo_json, json_option, lock_run_if_inside, parse_key_values
from .group import cli

_BUDGET_HELP = ("Budgets: --max-macs (alias --flops: the pruning papers' \"FLOPs\" are MACs, "
                "multiply-accumulates) and --max-params take 150M, 1.2G or plain integers.")


def _budget_options(fn):
    fn = click.option("--max-latency-ms", type=float, metavar="MS",
                      help="Latency budget in ms, predicted by the run's latency table "
                           "(`metaprune latency build RUN`).")(fn)
    fn = click.option("--max-params", metavar="COUNT", help="Parameter budget, e.g. 2M.")(fn)
    fn = click.option("--max-macs", "--flops", "max_macs", metavar="COUNT",
                      help="MACs budget, e.g. 150M or 1.2G. --flops is an alias: the papers' "
                           "\"FLOPs\" are MACs.")(fn)
    return fn


def _budgets(max_macs: str | None, max_params: str | None, max_latency_ms: float | None) -> dict:
    out: dict = {}
    if max_macs is not None:
        out["macs"] = parse_count(max_macs, "--max-macs")
    if max_params is not None:
        out["params"] = parse_count(max_params, "--max-params")
    if max_latency_ms is not None:
        if not 0 < max_latency_ms <= 1e7:  # also refuses nan and inf
            raise UserError(f"--max-latency-ms={max_latency_ms!r} is not accepted; accepted: a positive number "
                            "of ms up to 1e7")
        out["latency_ms"] = float(max_latency_ms)
    return out


def _scorer_factory(run_path: Path, device: str):
    def make():
        from ..search.evaluate import ProxyScorer, ProxySettings
        from ..search.store import read_state

        state = read_state(run_path)
        if state is None:
            raise UserError(f"run {str(run_path)!r} has no search state")
        proxy = state["search"]["proxy"]  # checked (metaprune/store/schemas.py); later versions may add keys
        return ProxyScorer(run_path, ProxySettings(**{f.name: proxy.get(f.name) for f in fields(ProxySettings)}),
                           device=device)

    return make


@cli.command(epilog=_BUDGET_HELP)
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@_budget_options
@click.option("--max-flops-metapruning", metavar="COUNT",
              help="Budget in the MetaPruning paper's FLOPs (its official counter: MACs plus BN outputs, "
                   "pooling and linear biases; `metaprune cost --convention metapruning`), e.g. 150M on "
                   "`-o variant=metapruning` of mobilenet_v2 for the paper's 150M setting.")
@click.option("--strategy", type=click.Choice(["constrained", "pareto"]),
              help="constrained: MetaPruning's search for the best vector under the budgets; pareto: "
                   "NSGA-II over (proxy error, MACs) giving the front for every budget at once "
                   "[default: from the config].")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False),
              help="Search config: a YAML file or a shipped name (smoke, quickstart, pareto, metapruning) "
                   "[default: MetaPruning's search].")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Override a config key, e.g. --set generations=5 --set eval.max_images=500.")
@click.option("--objectives", metavar="KEYS",
              help="Cost objectives of the front, comma-separated from macs, params, latency_ms, "
                   "flops_metapruning [default: macs].")
@click.option("--resume", is_flag=True, help="Continue the run's interrupted search.")
@click.option("--overwrite", is_flag=True, help="Replace the run's existing search.")
@click.option("--workers", type=int, help="Evaluate on this many Ray actors (local Ray unless --address).")
@click.option("--address", metavar="HOST:PORT", help="Evaluate on the Ray cluster at this address.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True, callback=check_device,
              help="Where candidates are scored.")
@click.option("--quiet", is_flag=True, help="No progress lines.")
@json_option
def search(run_dir, max_macs, max_params, max_latency_ms, max_flops_metapruning, strategy, config_path, sets,
           objectives, resume, overwrite, workers, address, device, quiet, as_json) -> None:
    """Search RUN's PruningNet for channel vectors under budgets; writes RUN/search/."""
    from ..config import config_path as resolve_config
    from ..config import load_config, read_yaml, shipped_configs
    from ..search.config import SearchConfig
    from ..search.runner import search_run

    budgets = _budgets(max_macs, max_params, max_latency_ms)
    if max_flops_metapruning is not None:
        budgets["flops_metapruning"] = parse_count(max_flops_metapruning, "--max-flops-metapruning")
    if workers is not None and not 1 <= workers <= 1024:
        raise UserError(f"--workers {workers} is not accepted; accepted: an integer in [1, 1024]")
    if resume and (config_path or sets or strategy or objectives or overwrite):
        raise UserError("--resume continues the saved search with its own config; drop -c, --set, "
                        "--strategy, --objectives and --overwrite")
    cfg = None
    if not resume:
        overrides = parse_key_values(sets, "--set")
        if strategy:
            overrides["strategy"] = strategy
        if objectives:
            overrides["objectives"] = [k.strip() for k in objectives.split(",") if k.strip()]
        path = resolve_config(config_path, "search", "search config") if config_path else None
        if path is not None and {"space", "train", "model"} & set(read_yaml(path, "search config")):
            raise UserError(f"search config {config_path!r} is a meta-training config (it has space/train "
                            f"sections); accepted: a search config such as {', '.join(shipped_configs('search'))}")
        cfg = load_config(SearchConfig, path, overrides)
    progress = None if (quiet or as_json) else (lambda line: click.echo(line, err=True))
    out = search_run(Path(run_dir), cfg, budgets, resume=resume, overwrite=overwrite, workers=workers,
                     address=address, device=device, progress=progress)
    best = {k: out.best[k] for k in ("id", "macs", "params", "latency_ms", "flops_metapruning") if k in out.best}
    summary = {"run": str(out.path), "strategy": out.strategy, "budgets": out.budgets,
               "evaluated": out.evaluated, "new_evaluations": out.new_evaluations,
               "seconds": round(out.seconds, 2),
               "candidates_per_minute": round(60 * out.new_evaluations / max(out.seconds, 1e-9), 1),
               "front_size": out.front_size, "best": {**best, **_best_scores(out.best)}}
    if as_json:
        echo_json(summary)
        return
    from ..search.runner import format_cost

    costs = ", ".join(format_cost(k, out.best[k]) for k in ("macs", "params", "latency_ms") if k in out.best)
    click.echo(f"searched {out.evaluated} candidates ({out.new_evaluations} new in {out.seconds:.1f} s); "
               f"best: id {out.best['id']}, {_best_text(out.best)} at {costs}; "
               f"front of {out.front_size}. See `metaprune pareto {run_dir}`.")


def _best_scores(best: dict) -> dict:
    """The best candidate's proxy figures: ``top1``, and with the loss as the score ``loss`` too."""
    if "loss" in best:
        return {"top1": best["top1"], "loss": best["loss"], "score": "loss"}
    return {"top1": best["score"]}


def _best_text(best: dict) -> str:
    if "loss" in best:
        return f"proxy loss {best['loss']:.4f} (the score), top-1 {100 * best['top1']:.2f}%"
    return f"proxy top-1 {100 * best['score']:.2f}%"


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--baselines", type=click.IntRange(0, 50), default=5, show_default=True,
              help="Uniform-width networks to score and draw for comparison (0: none).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True, callback=check_device,
              help="Where baselines are scored.")
@json_option
def pareto(run_dir, baselines, device, as_json) -> None:
    """Print RUN's Pareto front (proxy top-1 against MACs) and plot it to RUN/search/pareto.png."""
    from ..store.runs import open_run
    from ..search.report import PLOT_FILE, baseline_vectors, front_table, plot_front, score_baselines
    from ..search.store import read_candidates, read_front, search_dir

    run = open_run(run_dir)
    front_doc = read_front(run.path)
    cands = read_candidates(run.path)["candidates"]
    vectors = baseline_vectors(run.space, [c["macs"] for c in cands], baselines, front_doc["budgets"], cands)
    base = score_baselines(run.path, run.space, vectors, _scorer_factory(run.path, device), cands)
    png = plot_front(search_dir(run.path) / PLOT_FILE, cands, front_doc["front"], base,
                     f"{run.path.name}: {front_doc['strategy']} search, {len(cands)} candidates",
                     front_doc.get("score", "top1"))
    if as_json:
        echo_json({"run": str(run.path), "strategy": front_doc["strategy"],
                   "budgets": front_doc["budgets"], "objectives": front_doc["objectives"],
                   "score": front_doc.get("score", "top1"),
                   "front": front_doc["front"], "baselines": base, "plot": str(png)})
        return
    click.echo(front_table(front_doc["front"]))
    if base:
        click.echo("uniform-width baselines (each unit at the meta-training choice nearest the uniform "
                   "width): " + ", ".join(
            f"~{b['ratio']:.2f}x {b['macs'] / 1e6:.2f}M MACs {100 * b['top1']:.2f}%" for b in base))
    click.echo(f"plot: {png}")


@cli.command(epilog=_BUDGET_HELP)
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--id", "candidate_id", type=int, help="Export this candidate (ids as `metaprune pareto` shows).")
@_budget_options
@click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False),
              help="File to write: the spec (json) or the model (its spec goes beside it as FILE.json).")
@click.option("--format", "fmt", type=click.Choice(["json", "torchscript", "onnx"]), default="json",
              show_default=True, help="What to write.")
@click.option("--with-weights", is_flag=True,
              help="Give the model the PruningNet's generated weights (BN re-estimated) instead of a "
                   "random init.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True, callback=check_device,
              help="Where weights are generated.")
@json_option
def export(run_dir, candidate_id, max_macs, max_params, max_latency_ms, output, fmt, with_weights, device,
           as_json) -> None:
    """Export a searched candidate of RUN: by --id, or the best proxy top-1 under a budget."""
    from ..store.runs import open_run
    from ..search.export import candidate_spec, export_candidate, pick_candidate
    from ..search.store import read_candidates

    budgets = _budgets(max_macs, max_params, max_latency_ms)
    if candidate_id is not None and budgets:
        raise UserError("give either --id or budgets, not both")
    run = open_run(run_dir)
    doc = read_candidates(run.path)
    cand = pick_candidate(doc["candidates"], candidate_id=candidate_id, budgets=budgets)
    spec = candidate_spec(run.space, cand, doc, run.path)
    out = Path(output)
    lock_run_if_inside(run.path, out, "export")
    written = export_candidate(run, spec, out, fmt, with_weights, _scorer_factory(run.path, device))
    if as_json:
        echo_json({"id": cand["id"], "files": [str(p) for p in written], **spec.metrics})
        return
    click.echo(f"candidate {cand['id']}: {cand['macs'] / 1e6:.2f}M MACs, {cand['params']:,} params, "
               f"proxy top-1 {100 * cand['top1']:.2f}%"
               + (f", proxy loss {cand['loss']:.4f} (the search's score)" if "loss" in cand else "")
               + " -> " + ", ".join(str(p) for p in written))
