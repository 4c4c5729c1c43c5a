"""Scratch training of searched specs and their uniform-width baselines, one Ray Tune trial each.

Modules: ``recipe`` (the config), ``loop`` (a plain train/eval loop), ``plan`` (which specs, which
baselines, how many epochs), ``trainable`` (the Tune function), ``runner`` (Ray and the Tuner),
``results`` (gathering into ``RUN/train/results.json``) and ``report`` (table, plot, Kendall's tau).
"""
from .recipe import Recipe, TrainConfig, load_train_config, scratch_epochs

__all__ = ["Recipe", "TrainConfig", "load_train_config", "scratch_epochs"]
