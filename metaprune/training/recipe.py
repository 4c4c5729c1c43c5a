"""The scratch-training config: the ``recipe`` (optimiser, schedule, epochs), the ``data`` section
and the experiment's fault-tolerance settings, loaded from ``configs/train/*.yaml``."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

from pruningnet.errors import UserError

from ..config import check, config_path, load_config, read_yaml
from ..data import DataConfig
from ..process.precision import PRECISIONS

BUDGETS = ("scratch-e", "scratch-b")


@dataclass(frozen=True)
class Recipe:
    """How one network is trained from scratch: SGD with momentum, label smoothing and a cosine
    (or linear) schedule after a linear warm-up."""

    epochs: int = 2  # Scratch-E epochs (--budget scratch-b gives smaller networks more)
    batch_size: int = 128  # training batch per trial
    eval_batch_size: int = 512  # batch for scoring the test split
    lr: float = 0.1  # peak learning rate, > 0
    momentum: float = 0.9  # SGD momentum, in [0, 1)
    nesterov: bool = False  # Nesterov momentum (needs momentum > 0)
    weight_decay: float = 5e-4  # L2 penalty, >= 0
    decay_norm_and_bias: bool = False  # MetaPruning decays conv/linear weights only
    label_smoothing: float = 0.1  # in [0, 1)
    schedule: Literal["cosine", "linear"] = "cosine"  # decay after the warm-up, down to min_lr
    warmup_epochs: float = 0.0  # linear warm-up, in epochs (fractions allowed)
    min_lr: float = 0.0  # the schedule's floor, in [0, lr]
    augment: bool = True  # pad-and-crop (and flip, where the dataset allows) training images
    scratch_b_cap: float = 2.0  # Scratch-B epochs are at most this many times the recipe's
    max_train_images: int | None = None  # subset cap for quick runs; None trains on all of it
    max_test_images: int | None = None  # score on at most this many test images; null: all
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # autocast (fp16: with a GradScaler); for GPUs
    # NHWC model and inputs: faster with cuDNN, and with oneDNN on the CPU (a smoke-space trial 17-37%
    # less wall time, AMD EPYC; benchmarks/bench_scratch_layout.py)
    channels_last: bool = True

    def validate(self, prefix: str = "") -> None:
        for key in ("epochs", "batch_size", "eval_batch_size"):
            check(getattr(self, key) >= 1, prefix + key, getattr(self, key), "an integer >= 1")
        check(self.lr > 0, prefix + "lr", self.lr, "a number > 0")
        check(0 <= self.momentum < 1, prefix + "momentum", self.momentum, "a number in [0, 1)")
        check(not self.nesterov or self.momentum > 0, prefix + "nesterov", self.nesterov,
              "false when momentum is 0")
        check(self.weight_decay >= 0, prefix + "weight_decay", self.weight_decay, "a number >= 0")
        check(0 <= self.label_smoothing < 1, prefix + "label_smoothing", self.label_smoothing,
              "a number in [0, 1)")
        check(self.warmup_epochs >= 0, prefix + "warmup_epochs", self.warmup_epochs, "a number >= 0")
        check(0 <= self.min_lr <= self.lr, prefix + "min_lr", self.min_lr, "a number in [0, lr]")
        check(self.scratch_b_cap >= 1, prefix + "scratch_b_cap", self.scratch_b_cap, "a number >= 1")
        for key in ("max_train_images", "max_test_images"):
            v = getattr(self, key)
            check(v is None or v >= 1, prefix + key, v, "an integer >= 1 or null")
        check(self.precision in PRECISIONS, prefix + "precision", self.precision, ", ".join(PRECISIONS))


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``metaprune train`` reads from its recipe file."""

    seed: int = 0  # first seed; --seeds N trains seeds seed..seed+N-1 (default: the run's seed)
    data: DataConfig = field(default_factory=DataConfig)
    recipe: Recipe = field(default_factory=Recipe)
    checkpoints_to_keep: int = 2  # a trial's newest checkpoints kept by Ray Tune
    max_failures: int = 2  # a crashed trial is retried this many times from its last checkpoint
    # Fault injection for tests: the trial raises at the start of this epoch (0-based) on its
    # first attempt only, so the retry must resume from the checkpoint. Leave null.
    crash_at_epoch: int | None = None

    def validate(self, prefix: str = "") -> None:
        check(self.checkpoints_to_keep >= 1, prefix + "checkpoints_to_keep", self.checkpoints_to_keep,
              "an integer >= 1")
        check(self.max_failures >= 0, prefix + "max_failures", self.max_failures, "an integer >= 0")
        check(self.crash_at_epoch is None or self.crash_at_epoch >= 0, prefix + "crash_at_epoch",
              self.crash_at_epoch, "null or an integer >= 0")


def recipe_path(name_or_path: str) -> Path:
    """A recipe file: an existing path, or a name under ``configs/train/`` (``smoke``, ``cifar10``)."""
    return config_path(name_or_path, "train", "recipe")


def load_train_config(recipe: str | None, overrides: Mapping[str, Any] | None = None,
                      run_dir: str | Path | None = None) -> TrainConfig:
    """The recipe file over the run's own ``seed`` and ``data`` section (``RUN/config.yaml``), then
    ``--set`` overrides. A ``null`` in the recipe's ``data`` section keeps the run's value: the
    shipped ImageNet and CIFAR recipes say ``data.root: null``, which must not send a run meta-trained
    on ``data.root=/data/imagenet`` to ``./data`` (a recipe's own path, or ``--set``, still wins)."""
    base: dict = {}
    if run_dir is not None and (Path(run_dir) / "config.yaml").is_file():
        run_cfg = read_yaml(Path(run_dir) / "config.yaml")
        base = {k: run_cfg[k] for k in ("seed", "data") if k in run_cfg}
    return load_config(TrainConfig, recipe_path(recipe) if recipe else None, overrides, base)


def scratch_epochs(recipe: Recipe, budget: str, macs: int, full_macs: int) -> int:
    """Scratch-E: the recipe's epochs. Scratch-B: the same compute as the full-width network,
    ``epochs * full_macs / macs``, capped at ``scratch_b_cap`` times the recipe's epochs."""
    if budget not in BUDGETS:
        raise UserError(f"budget {budget!r} is unknown; accepted: {', '.join(BUDGETS)}")
    if budget == "scratch-e":
        return recipe.epochs
    factor = min(recipe.scratch_b_cap, full_macs / max(1, macs))
    return max(recipe.epochs, int(math.ceil(recipe.epochs * factor - 1e-9)))
