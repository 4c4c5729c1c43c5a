"""The scratch-recipe flags the regime benchmarks share (``--warmup-epochs``, ``--augment``), in one
place: added to a parser, turned into ``load_train_config`` overrides or into ``--set`` arguments."""
from __future__ import annotations

import argparse


def add_recipe_flags(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--warmup-epochs", type=float, default=None, help="override the recipe's warm-up (epochs)")
    ap.add_argument("--augment", action="store_true", help="turn on the recipe's augmentation (shifts)")


def recipe_overrides(args: argparse.Namespace) -> dict:
    """The flags as ``recipe.*`` overrides (only those given)."""
    out: dict = {}
    if args.warmup_epochs is not None:
        out["recipe.warmup_epochs"] = args.warmup_epochs
    if args.augment:
        out["recipe.augment"] = True
    return out


def recipe_sets(args: argparse.Namespace) -> list[str]:
    """The same overrides as ``--set key=value`` arguments of the ``metaprune`` CLI."""
    out: list[str] = []
    for key, value in recipe_overrides(args).items():
        out += ["--set", f"{key}={'true' if value is True else value}"]
    return out
