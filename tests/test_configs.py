"""Every shipped YAML config loads, validates and names a space that resolves."""
from __future__ import annotations

from pathlib import Path

import pytest

from metaprune.config import load_config
from pruningnet.errors import UserError
from metaprune.metatrain.config import MetaTrainConfig
from metaprune.search.config import SearchConfig
from metaprune.training.recipe import load_train_config
from pruningnet.spaces.registry import get_space

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_meta_training_configs_load(path):
    cfg = load_config(MetaTrainConfig, path)
    opts = dict(cfg.space.options)
    if cfg.data.name == "imagefolder":  # the space's 224 / 3 / 1000 defaults are ImageNet's
        assert cfg.data.image_size == opts.get("input_size", 224)
    space = get_space(cfg.space.name, **opts)
    assert len(space.units) > 0 and all(u.name in space.unit_names for u in space.units)
    assert set(opts.get("fixed_units", [])) <= set(space.unit_names)


@pytest.mark.parametrize("path", sorted((CONFIGS / "search").glob("*.yaml")), ids=lambda p: p.name)
def test_search_configs_load(path):
    cfg = load_config(SearchConfig, path)
    assert cfg.strategy in ("constrained", "pareto")


@pytest.mark.parametrize("path", sorted((CONFIGS / "train").glob("*.yaml")), ids=lambda p: p.name)
def test_train_recipes_load(path):
    cfg = load_train_config(str(path))
    assert cfg.recipe.epochs >= 1 and cfg.recipe.lr > 0


def test_exponent_floats_that_yaml_reads_as_strings_are_numbers(tmp_path):
    """PyYAML (YAML 1.1) reads ``1e-3`` as a string; a config key typed float takes it as 0.001."""
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1e-3\n  weight_decay: 5E-5\n")
    cfg = load_config(MetaTrainConfig, f, {"train.momentum": "9e-1"})
    assert cfg.train.lr == 0.001 and cfg.train.weight_decay == 5e-5 and cfg.train.momentum == 0.9


def test_shipped_configs_go_by_name():
    from metaprune.config import config_path

    assert config_path("smoke") == CONFIGS.resolve() / "smoke.yaml"
    assert config_path("pareto", "search") == CONFIGS.resolve() / "search" / "pareto.yaml"
    assert config_path("cifar10", "train") == CONFIGS.resolve() / "train" / "cifar10.yaml"


def test_bare_on_and_off_that_yaml_reads_as_booleans_are_the_words(tmp_path):
    """PyYAML (YAML 1.1) reads ``off``/``on`` as booleans; a key whose values are words takes them as
    the words (``--set train.channels_last=off`` was refused with "accepted: auto, on, off")."""
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  channels_last: off\n  amp: off\n")
    cfg = load_config(MetaTrainConfig, f)
    assert cfg.train.channels_last == "off" and cfg.train.amp == "off"
    assert load_config(MetaTrainConfig, f, {"train.channels_last": True}).train.channels_last == "on"
    with pytest.raises(UserError, match="train.amp=True is not accepted"):  # amp has no "on"
        load_config(MetaTrainConfig, f, {"train.amp": True})
