"""``metaprune train`` and ``metaprune report``: scratch training on Ray Tune and its results."""
from __future__ import annotations

from pathlib import Path

import click

from pruningnet.errors import UserError

from ..config import to_dict
from ..store.fileio import write_json
from .common import CPUS_PER_TRIAL, GPUS_PER_TRIAL, echo_json, json_option, lock_run, parse_key_values
from .group import cli


def _splits(run: Path, cfg):
    """What scratch training reads: a run's own splits, carved with the run's seed (not the
    recipe's, which picks the scratch seeds) and checked against its ``split.json``, so no image of
    its search split is trained on; the recipe's data for a directory of spec files only."""
    import os

    from ..store.runs import open_run

    if os.path.lexists(run / "config.yaml"):
        return open_run(run).load_data(cfg.data)
    return cfg.data.load(cfg.seed)


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@click.option("--top", type=click.IntRange(1, 100_000), default=None,
              help="Train the K best specs of RUN's search front (by proxy top-1).")
@click.option("--spec", "spec_files", multiple=True, metavar="FILE",
              help="Train this subnet spec file (repeat for several).")
@click.option("--budget", type=click.Choice(["scratch-e", "scratch-b"]), default="scratch-e", show_default=True,
              help="Scratch-E: the recipe's epochs; Scratch-B: epochs x MACs_full / MACs_spec (capped).")
@click.option("--epochs", type=click.IntRange(1, 100_000), default=None, help="Override the epochs of every trial.")
@click.option("--seeds", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Train each network with S seeds.")
@click.option("--recipe", default=None, metavar="NAME|FILE",
              help="Recipe YAML, or a name under configs/train (smoke, cifar10, imagenet_mobilenet_v2, ...).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE", help="Override a recipe key, e.g. recipe.lr=0.05.")
@click.option("--cpus-per-trial", type=CPUS_PER_TRIAL, default=1.0, show_default=True)
@click.option("--gpus-per-trial", type=GPUS_PER_TRIAL, default=None, help="Default: 1 if the cluster has GPUs, else 0.")
@click.option("--address", default=None, help="Attach to a running Ray cluster (auto or HOST:PORT); "
                                              "default: reuse or start a local one.")
@click.option("--resume", is_flag=True, help="Continue RUN's interrupted training from RUN/train/plan.json: finished "
              "trials are kept, the others go on from their last checkpoint (weights only; nothing is unpickled).")
@click.option("--quiet", is_flag=True, help="Less Ray Tune progress output.")
def train(run_dir: str, top: int | None, spec_files: tuple[str, ...], budget: str, epochs: int | None,
          seeds: int, recipe: str | None, sets: tuple[str, ...], cpus_per_trial: float,
          gpus_per_trial: float | None, address: str | None, resume: bool, quiet: bool) -> None:
    """Train specs from scratch, one Ray Tune trial per (spec, seed), each against the uniform-width
    baseline with the largest MACs not above its own; results go to RUN/train/results.json."""
    from ..training import load_train_config
    from ..training.loop import check_fits, scratch_data
    from ..training.plan import from_front, from_spec_files, trial_configs, with_baselines
    from ..training.results import summarise, write_results
    from ..training.report import format_table
    from ..training.resume import pending_trials, plan_path, read_plan, reports_dir
    from ..training.runner import (connect, default_gpus_per_trial, new_experiment_name, resume_experiment_name,
                                   run_trials)

    run = Path(run_dir)
    storage = run / "train" / "ray"
    lock_run(run, "train", create=True)  # one writer per run until this command ends (metaprune/store/runlock.py)

    finished: list = []
    trials: list[dict] = []
    if resume:
        # never Tuner.restore: Ray's experiment state is pickled (training/resume.py)
        if top is not None or spec_files:
            raise UserError("--resume takes the specs from RUN/train/plan.json; drop --top/--spec")
        plan = read_plan(run)
        cfg, candidates, trials, name, budget = plan.config, plan.candidates, plan.trials, plan.experiment, plan.budget
        cpus_per_trial, gpus = plan.cpus_per_trial, plan.gpus_per_trial
        finished, trials = pending_trials(storage, plan)
    else:
        if (top is None) == (not spec_files):
            raise UserError("give either --top K (from RUN's search) or --spec FILE, not both and not neither")
        cfg = load_train_config(recipe, parse_key_values(sets, "--set"), run)
        cands = from_front(run, top) if top is not None else from_spec_files(spec_files)
        cands = with_baselines(cands)
        candidates = [c.row() for c in cands]
    outcomes = list(finished)
    if trials or not resume:
        data = scratch_data(_splits(run, cfg), cfg.recipe, cfg.seed)
        for c in candidates:
            check_fits(c["space"], c["options"], data, c["name"])
        started = connect(address)
        try:
            if not resume:
                gpus = default_gpus_per_trial() if gpus_per_trial is None else gpus_per_trial
            from ..process.ray_resources import require

            # one trial must fit the cluster, or Ray Tune leaves it pending forever
            require(f"--cpus-per-trial {cpus_per_trial:g} / --gpus-per-trial {gpus:g}", cpus=cpus_per_trial,
                    gpus=gpus, each="for one trial")
            if resume:
                experiment = resume_experiment_name(storage, name)
                click.echo(f"resuming {len(trials)} of {len(plan.trials)} trial(s) ({len(finished)} finished) "
                           f"on Ray ({cpus_per_trial:g} CPU, {gpus:g} GPU per trial); experiment {experiment}",
                           err=True)
            else:
                trials = trial_configs(cands, cfg, budget, epochs, seeds, cpus_per_trial, gpus)
                name = experiment = new_experiment_name(storage)
                write_json(plan_path(run), {"experiment": name, "budget": budget, "config": to_dict(cfg),
                                             "cpus_per_trial": cpus_per_trial, "gpus_per_trial": gpus,
                                             "candidates": candidates, "trials": trials})
                click.echo(f"training {len(trials)} trial(s) of {len(candidates)} network(s) on Ray "
                           f"({cpus_per_trial:g} CPU, {gpus:g} GPU per trial); experiment {name}", err=True)
            outcomes += run_trials(storage, experiment, trials, data, cfg, cpus_per_trial, gpus,
                                   verbose=0 if quiet else 1, reports=reports_dir(storage, name))
        finally:
            if started:
                import ray

                ray.shutdown()
    else:
        click.echo(f"all {len(finished)} trial(s) of {str(plan.path)!r} had finished; nothing to resume", err=True)
    rows = summarise(candidates, outcomes, budget)
    path = write_results(run, rows)
    click.echo(format_table(rows))
    click.echo(f"wrote {path}")
    failed = [f"{r['name']}: {e}" for r in rows for e in r["failed"]]
    if failed:
        for line in failed:
            click.echo(f"metaprune: trial failed: {line}", err=True)
        raise click.ClickException(f"{len(failed)} trial(s) failed; results of the others are in "
                                   f"{path}; rerun with --resume to retry the failed trials")


@cli.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(file_okay=False))
@json_option
def report(run_dir: str, as_json: bool) -> None:
    """Print RUN's scratch-training results and plot proxy vs scratch top-1 (Kendall's tau)."""
    from ..training.report import format_table, kendall, plot, plot_budgets
    from ..training.results import read_results, results_path

    run = Path(run_dir)
    if not run.is_dir():
        raise UserError(f"run directory {str(run)!r} does not exist; accepted: a metaprune run directory")
    rows = read_results(run)
    if not rows:
        raise UserError(f"run {str(run)!r} has no scratch-training results ({str(results_path(run))!r}); "
                        "run `metaprune train` first")
    tau = kendall(rows)
    png = plot(rows, run / "train" / "report.png", tau)
    budgets_png = plot_budgets(rows, run / "train" / "budgets.png")
    if as_json:
        echo_json({"results": rows, "kendall": tau, "plot": str(png) if png else None,
                   "budgets_plot": str(budgets_png) if budgets_png else None})
        return
    click.echo(format_table(rows))
    t = tau["tau"]
    click.echo(f"Kendall's tau (proxy vs scratch top-1): {'-' if t is None else f'{t:.3f}'} over {tau['n']} network(s)")
    if png:
        click.echo(f"plot: {png}")
    if budgets_png:
        click.echo(f"per-budget plot: {budgets_png}")
