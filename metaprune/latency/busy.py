"""Refuse to time latency on a machine that other processes keep busy (issue 17).

On a busy machine, wall-clock timings of small layers with several torch threads are dominated by
threads waiting for a core: a table built so once predicted 1,546 ms for a network that runs in
11.8 ms. Before the CLI times anything with the wall clock, it reads how many of this process's CPUs
were idle over a short window (``/proc/stat``) and refuses, with the flags that do work, when fewer
are idle than the timing needs. ``--clock cpu`` (the timing thread's CPU time, one thread) is robust
to other processes and is never refused. Where ``/proc/stat`` is unreadable (not Linux) nothing is
checked.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from pruningnet.errors import UserError

#: How long the machine is watched, and the slack below the CPUs needed that still counts as idle.
WINDOW_S = 0.3
SLACK_CPUS = 0.25


def _cpu_times(stat: Path, cpus: set[int]) -> tuple[float, float] | None:
    """(idle, total) jiffies summed over the ``cpuN`` lines of /proc/stat for N in ``cpus``."""
    try:
        lines = stat.read_text().splitlines()
    except OSError:
        return None
    idle = total = 0.0
    seen = 0
    for line in lines:
        fields = line.split()
        if not fields or not fields[0].startswith("cpu") or fields[0] == "cpu" or len(fields) < 6:
            continue
        try:
            n, vals = int(fields[0][3:]), [float(v) for v in fields[1:9]]
        except ValueError:
            continue
        if n in cpus:
            idle += vals[3] + vals[4]  # idle + iowait; guest time is already counted in user
            total += sum(vals)
            seen += 1
    return (idle, total) if seen else None


def idle_cpus(window_s: float = WINDOW_S, stat: Path = Path("/proc/stat")) -> tuple[float, int] | None:
    """(CPUs idle on average over ``window_s``, CPUs this process may run on), or None where unknown.

    Only the CPUs of this process's affinity mask count (a container or ``taskset`` may give it fewer
    than the machine has)."""
    try:
        cpus = set(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: no /proc/stat either
        return None
    a = _cpu_times(stat, cpus)
    if a is None:
        return None
    time.sleep(window_s)
    b = _cpu_times(stat, cpus)
    if b is None or b[1] <= a[1]:
        return None
    return len(cpus) * (b[0] - a[0]) / (b[1] - a[1]), len(cpus)


def check_idle(device: str, threads: int, clock: str, busy_ok: bool = False) -> None:
    """Raise :class:`UserError` when the machine has fewer idle CPUs than the timing needs.

    Wall-clock timing on the CPU needs ``threads`` idle CPUs; on CUDA the host launches kernels from one
    thread, so one. The cpu clock needs none (it counts only the timing thread's own CPU time).
    """
    if busy_ok or clock == "cpu":
        return
    need = 1 if device.startswith("cuda") else threads
    seen = idle_cpus()
    if seen is None:
        return
    idle, n = seen
    if need > n:
        raise UserError(f"timing with {threads} threads needs {need} CPUs but this process may use {n}; "
                        f"accepted: --threads {n} or fewer")
    if idle < need - SLACK_CPUS:
        raise UserError(
            f"the machine is busy: {idle:.1f} of {n} CPUs idle over {WINDOW_S} s, and timing with {threads} "
            f"thread(s) needs {need}; accepted: an idle machine, --threads 1 --clock cpu (CPU time, robust "
            "to other processes), or --busy-ok to time anyway")
