"""Evaluation over Ray actors: each actor loads the run's PruningNet and data once, and
``toolbox.map`` becomes an ordered actor-pool map."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

from pruningnet.errors import UserError

from .evaluate import ProxySettings


class _Evaluator:
    """Actor body: a :class:`~metaprune.search.evaluate.ProxyScorer` living in a Ray worker."""

    def __init__(self, run_path: str, settings: dict, device: str):
        from .evaluate import ProxyScorer, ProxySettings

        settings = {**settings, "threads": settings.get("threads") or 1}
        self.scorer = ProxyScorer(run_path, ProxySettings(**settings), device=device)

    def ready(self) -> bool:
        return True

    def score(self, channels: tuple[int, ...]) -> float | dict[str, float]:
        return self.scorer(channels)


class RayActorMap:
    """A ``map(fn, items)`` that scores items on ``workers`` Ray actors (``fn`` is the local twin of
    what the actors compute and is not shipped). Reuses an initialised Ray; otherwise connects to
    ``address`` or starts a local Ray with ``workers`` CPUs, and shuts down only what it started."""

    def __init__(self, run_path: Path, settings: ProxySettings, *, workers: int | None = None,
                 address: str | None = None, device: str = "cpu"):
        import ray

        self._started = False
        if not ray.is_initialized():
            try:
                if address is not None:
                    ray.init(address=address, include_dashboard=False, log_to_driver=False,
                             configure_logging=False)
                else:
                    from ..process.threads import available_cores, local_cpus

                    # the machine's CPUs (or the cap), never inflated by --workers: more actors x
                    # threads than CPUs is refused below instead of oversubscribing the cores
                    ray.init(num_cpus=local_cpus(available_cores()), include_dashboard=False,
                             log_to_driver=False, configure_logging=False)
            except ConnectionError as e:
                raise UserError(f"--address {address!r}: cannot reach a Ray cluster ({e})") from None
            self._started = True
        self.actors = []
        try:
            self._start(ray, run_path, settings, workers, device)
        except BaseException:
            self.close()
            raise

    def _start(self, ray, run_path, settings: ProxySettings, workers: int | None, device: str) -> None:
        from ..process.ray_resources import actor_start_timeout_s, require
        from ..process.threads import torch_threads

        total = ray.cluster_resources()
        gpus = int(total.get("GPU", 0))
        if device == "cuda" and gpus == 0:
            raise UserError("--device cuda: the Ray cluster has no GPU; accepted: --device cpu or auto, or a "
                            "cluster with GPUs (--address)")
        use_gpu = device == "cuda" or (device == "auto" and gpus > 0)
        # an actor reserves as many CPUs as it runs torch threads: actors x threads never exceed the CPUs
        threads = torch_threads(settings.threads or 1)  # as the actor will set them (capped)
        if workers is None:
            workers = gpus if use_gpu else max(1, int(total.get("CPU", 1)) // threads)
        if workers < 1:
            raise UserError(f"--workers {workers} must be >= 1")
        require(f"--workers {workers}", cpus=workers * threads, gpus=workers if use_gpu else 0,
                each=f"{threads} per actor: one per torch thread")
        actor_cls = ray.remote(num_cpus=threads, num_gpus=1 if use_gpu else 0)(_Evaluator)
        self.workers = workers
        self.actors = [actor_cls.remote(str(Path(run_path).resolve()), settings.to_dict(),
                                        "cuda" if use_gpu else "cpu") for _ in range(workers)]
        timeout = actor_start_timeout_s()
        try:  # every actor has loaded the PruningNet, or we say why not instead of waiting forever
            ray.get([a.ready.remote() for a in self.actors], timeout=timeout)
        except ray.exceptions.GetTimeoutError:
            raise UserError(f"--workers {workers}: the evaluation actors did not start within {timeout:g} s "
                            "(busy cluster, or resources held by other jobs); accepted: fewer --workers, or set "
                            "METAPRUNE_RAY_START_TIMEOUT to wait longer") from None
        self.pool = ray.util.ActorPool(self.actors)

    def __call__(self, fn: Callable, items: Iterable) -> list:
        return list(self.pool.map(lambda actor, v: actor.score.remote(tuple(v)), list(items)))

    def close(self) -> None:
        """Stop the actors (and Ray, if this map started it)."""
        import ray

        for a in self.actors:
            ray.kill(a)
        self.actors = []
        if self._started:
            ray.shutdown()
            self._started = False
