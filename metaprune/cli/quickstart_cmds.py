"""``metaprune quickstart``: the whole pipeline on the embedded real data, one command."""
from __future__ import annotations

import time
from pathlib import Path

import click

from pruningnet.errors import UserError

from ..config import CONFIG_ROOT
from .group import cli, invoke

# --smoke checks an install in under 2 minutes: one meta-training epoch, a 16-candidate search on
# 100 images; the shipped smoke configs stay as the tests and users know them
SMOKE_META_TRAIN = ["--set", "train.epochs=1"]
SMOKE_SEARCH = ["--set", "generations=2", "--set", "eval.max_images=100"]


def _step(title: str, args: list[str]) -> None:
    click.echo(f"\n== {title}: metaprune {' '.join(args)}", err=True)
    code = invoke(args)
    if code != 0:
        raise UserError(f"quickstart stopped at '{title}' (exit {code}); fix the error above and rerun "
                        "with the same --run-dir to reuse what is done")


@cli.command()
@click.option("--run-dir", type=click.Path(file_okay=False), help="Run directory [default: runs/quickstart-TIME].")
@click.option("--smoke", is_flag=True, help="Tiny settings (under 2 minutes) to check an install.")
@click.option("--budget-fraction", type=click.FloatRange(0.05, 1.0), default=0.5, show_default=True,
              help="Export the best vector under this fraction of the largest member's MACs.")
@click.option("--data", "dataset", type=click.Choice(["mnist5k", "glyphs"]), default="mnist5k", show_default=True,
              help="mnist5k: the embedded MNIST digits; glyphs: 62 characters rendered from Debian fonts, "
                   "split by font (configs quickstart_glyphs.yaml).")
def quickstart(run_dir: str | None, smoke: bool, budget_fraction: float, dataset: str) -> None:
    """Meta-train, Pareto-search, export and scratch-train (with its uniform baseline) on the
    embedded MNIST digits (or, with --data glyphs, characters of held-out fonts): small-input
    MobileNetV2. Budgets are MACs (the papers' FLOPs)."""
    from pruningnet.cost import cost_model

    if not 0.05 <= budget_fraction <= 1.0:  # FloatRange lets nan through
        raise UserError(f"--budget-fraction {budget_fraction} is not accepted; accepted: a number in [0.05, 1]")

    from ..store.runs import open_run

    name = "smoke" if smoke else "quickstart"
    glyphs = dataset == "glyphs"
    run = Path(run_dir or f"runs/{name}{'-glyphs' if glyphs else ''}-{time.strftime('%Y%m%d-%H%M%S')}")
    cfg = CONFIG_ROOT / f"{name}.yaml"
    data_args = []
    if glyphs:  # its own config; --smoke: the smoke config on glyphs
        cfg = CONFIG_ROOT / ("smoke.yaml" if smoke else "quickstart_glyphs.yaml")
        # --smoke: as many steps as mnist5k's one epoch, not one pass over ~39,000 glyphs
        data_args = ["--set", "data.name=glyphs", "--set", "train.max_steps=70"] if smoke else []
    if (run / "pruningnet.pt").is_file():
        click.echo(f"reusing the trained PruningNet in {run}", err=True)
    elif (run / "config.yaml").is_file():
        _step("meta-train (resume)", ["train-pruningnet", "--resume", str(run), "--quiet"])
    else:
        _step("meta-train", ["train-pruningnet", "-c", str(cfg), "--run-dir", str(run), "--quiet",
                             *data_args, *(SMOKE_META_TRAIN if smoke else [])])
    search_cfg = CONFIG_ROOT / "search" / f"{name}{'_glyphs' if glyphs and not smoke else ''}.yaml"
    if (run / "search" / "front.json").is_file() and (run / "search" / "state.json").is_file():
        _step("search (resume)", ["search", str(run), "--resume", "--quiet"])
    else:
        _step("search", ["search", str(run), "-c", str(search_cfg), "--strategy", "pareto", "--quiet",
                         *(SMOKE_SEARCH if smoke else [])])
    _step("front", ["pareto", str(run), "--baselines", "3"])
    space = open_run(run).space
    budget = int(cost_model(space).macs(space.max_channels())[0] * budget_fraction)
    best = run / "exports" / "best.json"
    _step("export", ["export", str(run), "--max-macs", str(budget), "-o", str(best)])
    epochs = ["--epochs", "1"] if smoke else ["--epochs", "4", "--set", "recipe.max_train_images=3500",
                                               "--set", "recipe.max_test_images=1000"]
    if glyphs and not smoke:  # 62 classes: more images per class, every test image of the held-out fonts
        epochs = ["--epochs", "4", "--set", "recipe.max_train_images=12400", "--set", "recipe.max_test_images=4000"]
    _step("scratch training", ["train", str(run), "--spec", str(best), "--recipe", "smoke", "--quiet", *epochs])
    _step("report", ["report", str(run)])
    click.echo(f"\nrun directory: {run}  (front plot: {run / 'search' / 'pareto.png'}, "
               f"report plot: {run / 'train' / 'report.png'})")
    if smoke:
        click.echo("--smoke checks the install: 1 scratch epoch on 512 images, so its accuracies mean nothing; "
                   "run without --smoke for the real comparison")
