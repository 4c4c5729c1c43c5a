"""Ray and the Tuner: connect (or start a local cluster), hand the data over once, run or
restore the experiment, and collect each trial's last report."""
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
            from ..threads import local_cpus

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
    """``scratch-YYYYmmdd-HHMMSS`` (with a suffix if taken)."""
    base = time.strftime("scratch-%Y%m%d-%H%M%S")
    name, i = base, 1
    while (storage / name).exists():
        i += 1
        name = f"{base}-{i}"
    return name


def run_trials(storage: Path, name: str, trials: list[dict], data: ScratchData, cfg: TrainConfig,
               cpus_per_trial: float, gpus_per_trial: float, resume: bool = False,
               verbose: int = 1) -> list[TrialOutcome]:
    """Run every trial config as one Tune trial (or restore the interrupted experiment ``name``)."""
    from ray import tune

    # a snapshot per checkpoint is what num_to_keep asks for; short trials need not be warned of it
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    storage = storage.resolve()
    trainable = _trainable(data, cpus_per_trial, gpus_per_trial)
    if resume:
        path = storage / name
        if not tune.Tuner.can_restore(str(path)):
            raise UserError(f"experiment {str(path)!r} cannot be restored (no experiment state); "
                            "run without --resume")
        tuner = tune.Tuner.restore(str(path), trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = tune.Tuner(
            trainable,
            # the trials' own report logs and fault-injection markers live beside the experiment
            param_space={"trial": tune.grid_search([dict(t, log_dir=str(storage / name / "reports"))
                                                    for t in trials])},
            tune_config=tune.TuneConfig(num_samples=1, reuse_actors=True, trial_name_creator=_trial_name,
                                        trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                storage_path=str(storage), name=name, verbose=verbose,
                checkpoint_config=tune.CheckpointConfig(num_to_keep=cfg.checkpoints_to_keep),
                failure_config=tune.FailureConfig(max_failures=cfg.max_failures)))
    grid = tuner.fit()
    out = []
    for r in grid:
        out.append(TrialOutcome(r.config["trial"], dict(r.metrics or {}),
                                None if r.error is None else str(r.error).strip().splitlines()[-1],
                                str(r.path) if r.path else None))
    return out
