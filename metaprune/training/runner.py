"""Ray and the Tuner: connect (or start a local cluster), hand the data over once, run the trials
as a fresh experiment, and collect each trial's last report.

Nothing here restores a Tune experiment: ``Tuner.restore`` unpickles the experiment's state, and a
run directory is never trusted with a pickle. ``--resume`` starts a new experiment of the unfinished
trials instead (:mod:`metaprune.training.resume`)."""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from pruningnet.errors import UserError

from .loop import ScratchData
from .recipe import TrainConfig


@dataclass(frozen=True)
class TrialOutcome:
    """One finished (or failed) trial: its config and its last reported metrics."""

    trial: dict
    metrics: dict
    error: str | None
    path: str | None


def connect(address: str | None) -> bool:
    """Reuse an initialised Ray, attach to ``address``, or start a local cluster sized to the
    machine; returns True when this call started Ray (so the caller shuts it down)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    if ray.is_initialized():
        return False
    try:
        if address:
            ray.init(address=address, configure_logging=False, log_to_driver=False)
        else:
            from ..process.threads import local_cpus

            ray.init(num_cpus=local_cpus(), include_dashboard=False, configure_logging=False, log_to_driver=False)
    except (ConnectionError, ValueError, RuntimeError) as e:
        raise UserError(f"--address {address or '(local)'}: cannot reach a Ray cluster ({e}); "
                        "accepted: auto, HOST:PORT of a running cluster, or no --address") from None
    return True


def default_gpus_per_trial() -> float:
    """1 when the cluster has GPUs, else 0."""
    import ray

    return 1.0 if ray.cluster_resources().get("GPU", 0) > 0 else 0.0


def _trainable(data: ScratchData, cpus: float, gpus: float):
    from ray import tune

    from .trainable import scratch_trainable

    resources = {"cpu": cpus, "gpu": gpus} if gpus > 0 else {"cpu": cpus}
    return tune.with_resources(tune.with_parameters(scratch_trainable, data=data), resources)


def _trial_name(trial) -> str:
    t = trial.config["trial"]
    return f"{t['name']}-s{t['seed']}"


def new_experiment_name(storage: Path) -> str:
    """``scratch-YYYYmmdd-HHMMSS`` (with a suffix if taken); its folder is created here, so that no
    two calls, and no folder left in the run before, share it."""
    base = time.strftime("scratch-%Y%m%d-%H%M%S")
    return _claim(storage, [base] + [f"{base}-{i}" for i in range(2, 1000)])


def resume_experiment_name(storage: Path, experiment: str) -> str:
    """``EXPERIMENT-resumeK``, the first K not taken; its folder is created here."""
    return _claim(storage, [f"{experiment}-resume{k}" for k in range(1, 100_000)])


def _claim(storage: Path, names: list[str]) -> str:
    storage.mkdir(parents=True, exist_ok=True)
    for name in names:
        try:
            (storage / name).mkdir()
        except FileExistsError:
            continue
        return name
    raise UserError(f"{str(storage)!r} has no free experiment name left ({names[0]} .. {names[-1]} are taken)")


def _text_errors():
    """A Tune callback: when a trial fails, Ray pickles the exception into the trial's folder (in the
    run directory) and its ResultGrid would unpickle it from there; forgetting the pickle's name makes
    the ResultGrid read the text copy (``error.txt``) instead."""
    from ray import tune

    class TextErrors(tune.Callback):
        def _forget(self, trial) -> None:
            meta = getattr(trial, "run_metadata", None)
            if meta is not None and getattr(meta, "pickled_error_filename", None) is not None:
                meta.pickled_error_filename = None

        def on_trial_recover(self, iteration, trials, trial, **info):
            self._forget(trial)

        def on_trial_error(self, iteration, trials, trial, **info):
            self._forget(trial)

    return TextErrors()


def run_trials(storage: Path, name: str, trials: list[dict], data: ScratchData, cfg: TrainConfig,
               cpus_per_trial: float, gpus_per_trial: float, verbose: int = 1,
               reports: Path | None = None) -> list[TrialOutcome]:
    """Run every trial config as one Tune trial of a new experiment ``name`` (a folder of ``storage``,
    made by :func:`new_experiment_name` or :func:`resume_experiment_name`). The trials append their
    reports to ``reports`` (default ``storage/name/reports``; on a resume, the first experiment's);
    a trial config's ``resume_from`` is a checkpoint file it continues from."""
    from ray import tune

    # a snapshot per checkpoint is what num_to_keep asks for; short trials need not be warned of it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    storage = storage.resolve()
    reports = (storage / name / "reports") if reports is None else reports.resolve()
    tuner = tune.Tuner(
        _trainable(data, cpus_per_trial, gpus_per_trial),
        # the trials' own report logs and fault-injection markers live beside the experiment
        param_space={"trial": tune.grid_search([dict(t, log_dir=str(reports)) for t in trials])},
        tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            storage_path=str(storage), name=name, verbose=verbose, callbacks=[_text_errors()],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
            failure_config=tune.FailureConfig(max_failures=cfg.max_failures)))
    grid = tuner.fit()
    out = []
    for r in grid:
        out.append(TrialOutcome(r.config["trial"], dict(r.metrics or {}),
                                None if r.error is None else str(r.error).strip().splitlines()[-1],
                                str(r.path) if r.path else None))
    return out
