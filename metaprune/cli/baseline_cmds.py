"""``metaprune baseline``: criterion-pruned architectures (L1, L2, BN scale, Taylor, FPGM, random) at
a MACs budget, as subnet specs to train from scratch beside the search's pick."""
from __future__ import annotations

from pathlib import Path

import click

from pruningnet.errors import UserError

from .common import echo_json, json_option, lock_run, parse_key_values
from .group import cli


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--criteria", required=True, metavar="LIST",
              help="Comma-separated: random, l1, l2, bn (Network Slimming's |gamma|), taylor (first-order, "
                   "BN), fpgm (geometric median).")
@click.option("--max-macs", "--flops", "max_macs", metavar="COUNT",
              help="MACs budget (the papers' \"FLOPs\": conv + linear multiply-accumulates, BN folded), "
                   "e.g. 12M.")
@click.option("--like", "like", metavar="SPEC", type=click.Path(dir_okay=False),
              help="Use this spec's MACs as the budget (e.g. the search's exported pick).")
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Full networks trained with seeds seed..seed+N-1; one spec per criterion and seed.")
@click.option("--slimming", type=float, default=0.0, show_default=True, metavar="LAMBDA",
              help="Network Slimming: L1 penalty on BN scales while training the full network.")
@click.option("--full-checkpoint", type=click.Path(dir_okay=False), metavar="FILE",
              help="Score this trained full-width network (a state_dict) instead of training one.")
@click.option("--recipe", default="smoke", show_default=True, metavar="NAME|FILE",
              help="Scratch recipe for the full network (configs/train names or a YAML file).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe key.")
@click.option("--normalizer", type=click.Choice(["mean", "max", "none"]), default="mean", show_default=True,
              help="Per-layer score normaliser before the global ranking (Torch-Pruning's default: mean).")
@click.option("--taylor-batches", type=click.IntRange(1, 100_000), default=10, show_default=True,
              help="Training batches (64 images) whose gradients the Taylor criterion sums.")
@json_option
def baseline(run_dir, criteria, max_macs, like, seeds, slimming, full_checkpoint, recipe, sets, normalizer,
             taylor_batches, as_json) -> None:
    """Prune RUN's space at full width by classic criteria, globally, to a MACs budget; writes
    RUN/baselines/<criterion>-<macs>.json specs for `metaprune train --spec` / `cost` / `build` / `export`."""
    from ..baselines import BaselineRequest, check_request, make_baselines, parse_criteria
    from ..store.runs import open_run
    from ..store.specfile import load_spec
    from ..training import load_train_config
    from ..training.loop import check_fits, scratch_data
    from ..units import parse_count

    names = parse_criteria(criteria)
    if (max_macs is None) == (like is None):
        raise UserError("give either --max-macs COUNT or --like SPEC, not both and not neither")
    run = open_run(run_dir)
    if like is not None:
        spec = load_spec(like)
        if spec.space.name != run.space.name or spec.space.options != run.space.options:
            raise UserError(f"--like {like!r} is a spec of space {spec.space.name} {spec.space.options}, not of "
                            f"run {run_dir!r}'s space {run.space.name} {run.space.options}")
        from pruningnet import count_cost

        budget = int(count_cost(spec)["macs"])
    else:
        budget = parse_count(max_macs, "--max-macs")
    req = BaselineRequest(names, budget, seeds, slimming, full_checkpoint, normalizer, taylor_batches)
    check_request(req, run.space)
    cfg = load_train_config(recipe, parse_key_values(sets, "--set"), Path(run_dir))
    data = scratch_data(run.load_data(cfg.data), cfg.recipe, cfg.seed)
    check_fits(run.space.name, run.space.options, data, f"run {run_dir!r}")
    checkpoint_model = None
    if full_checkpoint:
        from ..baselines.full import load_full_checkpoint

        checkpoint_model = load_full_checkpoint(run.space, full_checkpoint)  # refused before anything is written
    log = (lambda s: None) if as_json else (lambda s: click.echo(s, err=True))
    lock_run(run.path, "baseline")  # one writer per run, until this command ends
    rows = make_baselines(run, cfg, data, req, log=log, checkpoint_model=checkpoint_model)
    if as_json:
        echo_json({"run": str(run.path), "max_macs": budget, "baselines": rows})
        return
    click.echo(f"{'criterion':10s} {'seed':>4s} {'MACs':>12s} {'params':>10s}  file")
    for r in rows:
        click.echo(f"{r['criterion']:10s} {r['seed']:4d} {r['macs']:12,d} {r['params']:10,d}  {r['file']}")
    click.echo(f"budget {budget:,} MACs; train them with: metaprune train {run_dir} "
               + " ".join(f"--spec {r['file']}" for r in rows))
