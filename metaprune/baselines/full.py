"""The trained full-width network that criteria score: trained here with the scratch recipe (cached in
``RUN/baselines/full-<key>.pt``), optionally with Network Slimming's L1 penalty on BN scales, or taken
from a user's checkpoint (``torch.load(weights_only=True)``; it must fit the run's space at full width).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch

from pruningnet import build_model, make_spec
from pruningnet.errors import UserError

from ..config import to_dict
from ..store.fileio import atomic_save, load_weights, write_json
from ..store.schemas import FULL_RECORD, FULL_WEIGHTS, Kind, Tensors
from ..process.threads import max_threads


USER_FULL_WEIGHTS = Kind("--full-checkpoint", Tensors(), "pass a checkpoint of a network that trained")


def full_spec(space):
    return make_spec(space, space.max_channels())


def load_full_checkpoint(space, path: str | Path) -> torch.nn.Module:
    """A full-width network of ``space`` with the weights of ``path`` (a state_dict, or a dict holding
    one under ``model``/``state_dict``)."""
    blob = load_weights(path, "full-network checkpoint")
    if isinstance(blob, dict) and not any(isinstance(v, torch.Tensor) for v in blob.values()):
        blob = blob.get("model", blob.get("state_dict", blob))
    model = build_model(full_spec(space))
    if not isinstance(blob, dict):
        raise UserError(f"--full-checkpoint {str(path)!r} holds no state_dict; accepted: the state_dict of "
                        f"`metaprune build` on the full-width spec of space {space.name}")
    USER_FULL_WEIGHTS.check(blob, path)  # NaN weights would score every channel alike
    want = model.state_dict()
    missing = sorted(set(want) - set(blob))
    unexpected = sorted(set(blob) - set(want))
    bad = [k for k in want if k in blob and isinstance(blob[k], torch.Tensor) and blob[k].shape != want[k].shape]
    if missing or unexpected or bad:
        what = (f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}" if unexpected else
                f"{bad[0]!r} has shape {tuple(blob[bad[0]].shape)}, the full width needs {tuple(want[bad[0]].shape)}")
        raise UserError(f"--full-checkpoint {str(path)!r} does not fit space {space.name} at full width ({what}); "
                        "accepted: a checkpoint of this run's space and options at full width")
    model.load_state_dict(blob)
    return model.eval()


def _key(space, cfg, seed: int, slimming: float) -> str:
    doc = {"space": space.name, "options": space.options, "recipe": to_dict(cfg.recipe),
           "data": to_dict(cfg.data), "seed": seed, "slimming": slimming}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:12]


def load_cached_full(run_path: Path, space, cfg, seed: int, slimming: float) -> tuple[torch.nn.Module, dict] | None:
    """The cached full-width network of this recipe, data, seed and slimming and its record, checked
    (finite weights that fit the space, a well-formed record), or None when there is none."""
    key = _key(space, cfg, seed, slimming)
    d = run_path / "baselines"
    weights, record_file = d / f"full-{key}.pt", d / f"full-{key}.json"
    if not (os.path.lexists(weights) and os.path.lexists(record_file)):
        return None
    blob = FULL_WEIGHTS.check(load_weights(weights, "cached full network", follow=False), weights)
    record = FULL_RECORD.read(record_file)
    model = build_model(full_spec(space))
    try:
        model.load_state_dict(blob)
    except (RuntimeError, TypeError, KeyError):
        raise UserError(f"cached full network {str(weights)!r} does not fit space {space.name} at full width; "
                        "delete it (and its .json record) to train the full network again") from None
    return model.eval(), record


def train_full(run_path: Path, space, cfg, data, seed: int, slimming: float, log=print) -> tuple[torch.nn.Module, dict]:
    """The full-width network trained from scratch with the recipe (cached per recipe, data, seed and
    slimming); returns the model and its record (test top-1, file)."""
    from ..training.loop import fit

    cached = load_cached_full(run_path, space, cfg, seed, slimming)
    if cached is not None:
        log(f"reusing the trained full-width network {cached[1]['file']}")
        return cached
    key = _key(space, cfg, seed, slimming)
    d = run_path / "baselines"
    weights, record_file = d / f"full-{key}.pt", d / f"full-{key}.json"
    model = build_model(full_spec(space))
    trial = {"name": "full", "kind": "full", "seed": seed, "epochs": cfg.recipe.epochs, "space": space.name,
             "options": dict(space.options), "channels": dict(space.max_channels()), "recipe": to_dict(cfg.recipe),
             "threads": max_threads() or torch.get_num_threads(), "gpus": 0, "slimming": slimming}
    log(f"training the full-width network ({cfg.recipe.epochs} epochs, seed {seed}"
        f"{f', slimming {slimming:g}' if slimming else ''})")
    holder: dict = {}

    def keep(epoch, metrics, state):
        holder["state"] = state["model"]
        log(f"  epoch {epoch + 1}: test top-1 {100 * metrics['test_top1']:.2f}%")

    metrics = fit(trial, data, on_epoch=keep)
    model.load_state_dict(holder["state"])
    d.mkdir(parents=True, exist_ok=True)
    atomic_save(weights, holder["state"])
    record = {"file": str(weights), "seed": seed, "slimming": slimming, "epochs": cfg.recipe.epochs,
              "test_top1": metrics.get("test_top1"), "recipe": to_dict(cfg.recipe)}
    write_json(record_file, record)
    return model.eval(), record
