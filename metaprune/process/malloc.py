"""Steady host memory: glibc's malloc pinned so that a repeated forward or training step reuses its pages.

Left alone, glibc serves every block above its *dynamic* mmap threshold with fresh pages from the
kernel and returns them on free, so each forward of a network whose activations cross that threshold
pays page faults (zeroed pages) again; where the threshold stands depends on the process's allocation
history. On this project's 2-core AMD EPYC VM that made the same MobileNetV2-1.4 at 224 take 17-22 ms
in one process and 11-13 ms in another, for 7 of 20 random vectors, while their per-layer table
entries (small blocks, reused) predicted 11-13 ms: the latency table's largest error (issue 17,
BENCHMARKS.md "Where the 224 latency error came from"). A served model runs in a steady state; so do
our timings and jobs: the threshold is pinned at glibc's maximum (32 MiB on 64-bit), the heap is not
trimmed below 1 GiB, and no block is mapped on its own (``M_MMAP_MAX`` 0): blocks above 32 MiB (the
PruningNet's full-size generator gradients, up to 229 MB each for MobileNetV2-1.4, allocated every
step; activations of large batches at 224) come from the kept heap too instead of fresh pages per call.
(This holds for the main thread's arena, where our steps allocate; glibc still maps a block a thread
arena cannot hold. Forked processes, e.g. DataLoader workers, inherit the settings, and each keeps
its own freed heap.)

The same faults slow training: on the same VM, with the threshold pinned, a batch-8 step at 224 of the
static MobileNetV2-1.4 took 25-29% less and the smoke meta-training 5-17% less
(``benchmarks/bench_malloc.py``, 4 pairs); the PruningNet's own step hardly changed until its
gradients stopped being mapped too (BENCHMARKS.md, "The PruningNet's step at 224"). So every process
of ours that times, meta-trains, scores candidates or trains from scratch calls
:func:`steady_allocator` once (process-wide; elsewhere than glibc it does nothing).
``METAPRUNE_MALLOC`` picks the mode: ``steady`` (the default, above), ``mapped`` (thresholds pinned,
blocks above 32 MiB still mapped and returned per call: the first issue-17 setting, less memory kept)
or ``default`` (glibc as it is: to time as a deployment with default settings would run, or to
compare). It reaches Ray workers of a local cluster, started from this process, but not those of a
cluster joined with ``--address``, which keep ``steady``. The cost is memory: a process keeps freed
heap below 1 GiB and its large blocks instead of returning them (``bench_malloc.py`` records peak RSS
beside the times).
"""
from __future__ import annotations

import ctypes
import functools
import os
import sys

from pruningnet.errors import UserError

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameters (malloc.h)
M_MMAP_THRESHOLD = -3
M_MMAP_MAX = -4
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2); larger values are refused
TRIM_THRESHOLD = 1 << 30
ENV = "METAPRUNE_MALLOC"
MODES = ("steady", "mapped", "default")


def malloc_mode() -> str:
    """``METAPRUNE_MALLOC`` (default ``steady``); the CLI checks it before any command runs."""
    mode = os.environ.get(ENV, "steady")
    if mode not in MODES:
        raise UserError(f"{ENV}={mode!r} is not supported; accepted: {', '.join(MODES)}")
    return mode


@functools.cache
def steady_allocator() -> bool:
    """Pin glibc's mmap and trim thresholds for this process (``steady``: and map no block on its own);
    True if glibc took every setting."""
    mode = malloc_mode()
    if mode == "default" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    took = [mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)]
    if mode == "steady":
        took.append(mallopt(M_MMAP_MAX, 0))
    return all(took)
