"""The one place that decides how many torch threads (and local Ray CPUs) a process may use.

``METAPRUNE_MAX_THREADS`` caps every stage: ``metaprune serve`` sets it for each job to
cores / concurrent jobs, so jobs never oversubscribe the machine, whatever their configs ask for.
"""
from __future__ import annotations

import os

ENV = "METAPRUNE_MAX_THREADS"


def available_cores() -> int:
    """The CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def max_threads() -> int | None:
    """The cap from the environment, or None when unset (or not a positive integer)."""
    try:
        v = int(os.environ.get(ENV, ""))
    except ValueError:
        return None
    return v if v >= 1 else None


def torch_threads(requested: int | None) -> int | None:
    """The thread count to give ``torch.set_num_threads``: ``requested`` capped by the environment
    (None: leave torch's default, unless there is a cap)."""
    cap = max_threads()
    if cap is None:
        return requested
    return cap if requested is None else max(1, min(int(requested), cap))


def set_torch_threads(requested: int | None) -> None:
    import torch

    n = torch_threads(requested)
    if n is not None:
        torch.set_num_threads(n)


def local_cpus(default: int | None = None) -> int | None:
    """CPUs for a local Ray cluster this process starts: the cap when set, else ``default``."""
    cap = max_threads()
    return cap if cap is not None else default
