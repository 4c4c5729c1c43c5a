"""Steady host memory: glibc's malloc pinned so that a repeated forward or training step reuses its pages.

Left alone, glibc serves every block above its *dynamic* mmap threshold with fresh pages from the
kernel and returns them on free, so each forward of a network whose activations cross that threshold
pays page faults (zeroed pages) again; where the threshold stands depends on the process's allocation
history. On this project's 2-core AMD EPYC VM that made the same MobileNetV2-1.4 at 224 take 17-22 ms
in one process and 11-13 ms in another, for 7 of 20 random vectors, while their per-layer table
entries (small blocks, reused) predicted 11-13 ms: the latency table's largest error (issue 17,
BENCHMARKS.md "Where the 224 latency error came from"). A served model runs in a steady state; so do
our timings and jobs: the threshold is pinned at glibc's maximum (32 MiB on 64-bit) and the heap is not
trimmed below 1 GiB. Activations above 32 MiB (large batches at 224) are still mapped per call.

The same faults slow training: on the same VM, pinned, a batch-8 step at 224 of the static
MobileNetV2-1.4 took 25-29% less and the smoke meta-training 5-17% less (``benchmarks/bench_malloc.py``,
4 pairs; the PruningNet's own step changed by -13% to +6%). So
every process of ours that times, meta-trains, scores candidates or trains from scratch calls
:func:`steady_allocator` once (process-wide; elsewhere than glibc it does nothing).
``METAPRUNE_MALLOC=default`` leaves glibc as it is (to time as a deployment with default settings
would run, or to compare; it reaches Ray workers of a local cluster, started from this process,
but not those of a cluster joined with ``--address``, which keep the default, steady). The cost is
memory: a process keeps freed heap below 1 GiB instead of returning it (``bench_malloc.py`` records
peak RSS beside the times).
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

from pruningnet.errors import UserError

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2); larger values are refused
TRIM_THRESHOLD = 1 << 30
ENV = "METAPRUNE_MALLOC"
MODES = ("steady", "default")


def malloc_mode() -> str:
    """``METAPRUNE_MALLOC`` (default ``steady``); the CLI checks it before any command runs."""
    mode = os.environ.get(ENV, "steady")
    if mode not in MODES:
        raise UserError(f"{ENV}={mode!r} is not supported; accepted: {', '.join(MODES)}")
    return mode


@functools.cache
def steady_allocator() -> bool:
    """Pin glibc's mmap threshold and trim threshold for this process; True if glibc took both."""
    if malloc_mode() == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    took = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    return all(took)
