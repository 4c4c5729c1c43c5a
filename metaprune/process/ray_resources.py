"""Ask Ray only for what its cluster has: a request that can never be met is refused with one line
instead of waiting forever (Ray queues an unsatisfiable actor or trial without an error)."""
from __future__ import annotations

import os

from pruningnet.errors import UserError

DEFAULT_START_TIMEOUT_S = 300.0


def actor_start_timeout_s() -> float:
    """Seconds to wait for actors to start (``METAPRUNE_RAY_START_TIMEOUT``, default 300)."""
    try:
        v = float(os.environ.get("METAPRUNE_RAY_START_TIMEOUT", DEFAULT_START_TIMEOUT_S))
    except ValueError:
        return DEFAULT_START_TIMEOUT_S
    return v if v > 0 else DEFAULT_START_TIMEOUT_S


def require(what: str, *, cpus: float = 0, gpus: float = 0, each: str = "") -> None:
    """:class:`UserError` naming ``what`` when the connected cluster has fewer CPUs or GPUs in total."""
    import ray

    total = ray.cluster_resources()
    have_cpu, have_gpu = float(total.get("CPU", 0)), float(total.get("GPU", 0))
    note = f" ({each})" if each else ""
    if gpus > have_gpu:
        raise UserError(f"{what} needs {gpus:g} GPU(s){note} but the Ray cluster has {have_gpu:g}; accepted: at "
                        f"most {have_gpu:g} GPU(s) in total" + (", or a CPU run" if not have_gpu else ""))
    if cpus > have_cpu:
        raise UserError(f"{what} needs {cpus:g} CPU(s){note} but the Ray cluster has {have_cpu:g}; accepted: at "
                        f"most {have_cpu:g} CPU(s) in total")
