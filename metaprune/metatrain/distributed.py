"""Meta-training on several workers with Ray Train: ``TorchTrainer`` runs :func:`meta_train` on each
worker under DistributedDataParallel (gloo on CPUs, NCCL on GPUs).

The run directory must be reachable by every worker at the same path (one node, or a shared file
system): workers read the run's config and data from it, rank 0 writes checkpoints, metrics and the
PruningNet there, and ``--resume`` continues from its last checkpoint with any number of workers.
"""
from __future__ import annotations

import os

from pruningnet.errors import UserError

from ..store.runs import Run


def _worker_loop(config: dict) -> None:
    import ray.train
    import torch

    from .loop import meta_train
    from ..store.runs import open_run
    from ..process.threads import ENV as THREADS_ENV
    from ..process.threads import set_torch_threads

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    # the project's one cap: meta_train's own set_torch_threads(train.threads) stays within this
    # worker's CPUs instead of overriding them
    os.environ[THREADS_ENV] = str(config["threads"])
    set_torch_threads(config["threads"])
    device = ray.train.torch.get_device() if config["gpus"] else torch.device("cpu")
    run = open_run(config["run"])
    meta_train(run, run.load_data(), progress=False, dist=(rank, world), device=device)


def meta_train_on_ray(run: Run, workers: int, gpus_per_worker: float = 0.0, address: str | None = None) -> dict:
    """Meta-train ``run`` on ``workers`` Ray Train workers; returns rank 0's status."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    if workers < 1:
        raise UserError(f"--workers {workers} must be >= 1")
    if gpus_per_worker < 0:
        raise UserError(f"--gpus-per-worker {gpus_per_worker:g} must be >= 0")
    import ray
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from ..process.ray_resources import require
    from ..store.schemas import STATUS_FILE
    from ..training.runner import connect

    started = connect(address)
    try:
        cpus = float(ray.cluster_resources().get("CPU", 1))
        threads = max(1, int(cpus // workers)) if not gpus_per_worker else max(1, int(run.config.train.threads or 1))
        require(f"--workers {workers}", cpus=threads * workers, gpus=gpus_per_worker * workers,
                each=f"{threads:g} CPU{'s' if threads != 1 else ''}"
                     + (f" and {gpus_per_worker:g} GPU per worker" if gpus_per_worker else " per worker"))
        resources = {"CPU": threads, **({"GPU": gpus_per_worker} if gpus_per_worker else {})}
        trainer = TorchTrainer(
            _worker_loop,
            train_loop_config={"run": str(run.path.resolve()), "threads": threads, "gpus": gpus_per_worker},
            torch_config=TorchConfig(backend="nccl" if gpus_per_worker else "gloo"),
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=bool(gpus_per_worker),
                                         resources_per_worker=resources),
            run_config=RunConfig(name="meta-train", storage_path=str((run.path / "ray").resolve()),
                                 failure_config=FailureConfig(max_failures=0)),
        )
        try:
            trainer.fit()
        except Exception as e:  # a worker's own error (e.g. TrainingDiverged) arrives wrapped
            msg = str(e).strip().splitlines()
            last = next((ln for ln in reversed(msg) if "Error" in ln or "error" in ln), msg[-1] if msg else repr(e))
            raise UserError(f"meta-training on {workers} workers failed: {last.strip()[:300]}; continue with "
                            f"metaprune train-pruningnet --resume {run.path} --workers {workers}") from None
        return STATUS_FILE.read(run.path / "status.json")
    finally:
        if started:
            ray.shutdown()
