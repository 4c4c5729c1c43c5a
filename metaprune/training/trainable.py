"""The Ray Tune function trainable: restore, train one epoch at a time, report with a checkpoint.

A checkpoint is one ``state.pt`` of tensors and plain numbers (``torch.save`` of the state
:func:`metaprune.training.loop.fit` hands over), read back only with ``torch.load(weights_only=True)``."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from ray import tune

from ..store.fileio import load_weights
from .loop import ScratchData, fit

STATE_FILE = "state.pt"
REPORTS_FILE = "reports.jsonl"  # one line per tune.report, appended by the trial itself
CRASH_MARKER = ".crashed_once"


class InjectedCrash(RuntimeError):
    """Raised by the ``crash_at_epoch`` fault-injection knob (tests only)."""


def scratch_trainable(config: dict, data: ScratchData) -> None:
    """Train ``config["trial"]`` on ``data`` (handed over through the object store by
    ``tune.with_parameters``), reporting once per epoch with a checkpoint."""
    trial = config["trial"]
    state = None
    checkpoint = tune.get_checkpoint()  # a retry in this experiment: the folder of our last report
    if checkpoint is not None:
        with checkpoint.as_directory() as d:
            state = load_weights(Path(d) / STATE_FILE, "trial checkpoint", follow=False)
    elif trial.get("resume_from"):  # --resume: an earlier experiment's checkpoint, checked by the driver
        state = load_weights(trial["resume_from"], "trial checkpoint", follow=False)

    crash_at = trial.get("crash_at_epoch")
    log_dir = Path(trial.get("log_dir") or tune.get_context().get_trial_dir())
    log_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{trial['name']}-s{trial['seed']}"
    marker = log_dir / f"{stem}{CRASH_MARKER}"

    def before_epoch(epoch: int) -> None:
        if crash_at is not None and epoch == crash_at and not marker.exists():
            marker.touch()
            raise InjectedCrash(f"crash_at_epoch={crash_at}: injected failure (first attempt only)")

    def on_epoch(epoch: int, metrics: dict, st: dict) -> None:
        with tempfile.TemporaryDirectory() as tmp:
            torch.save(st, Path(tmp) / STATE_FILE)
            row = dict(metrics, name=trial["name"], seed=trial["seed"])
            # logged first: after the last report Tune may stop this worker at once
            # O_NOFOLLOW: a link planted in the run directory must not redirect the append elsewhere
            fd = os.open(log_dir / f"{stem}.{REPORTS_FILE}", os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW,
                         0o666)
            with os.fdopen(fd, "a") as f:
                f.write(json.dumps(row, default=float) + "\n")
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(tmp))

    fit(trial, data, state, on_epoch=on_epoch, before_epoch=before_epoch)
