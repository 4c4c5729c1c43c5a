"""Refuse to time latency on a machine that other processes keep busy (issue 17).

On a busy machine, wall-clock timings of small layers with several torch threads are dominated by
threads waiting for a core: a table built so once predicted 1,546 ms for a network that runs in
11.8 ms. Before the CLI times anything with the wall clock, it reads how many CPUs were idle over a
short window (``/proc/stat``, the whole machine) and refuses, with the flags that do work, when fewer
are idle than the timing needs. ``--clock cpu`` (the timing thread's CPU time, one thread) is robust
to other processes and is never refused. Where ``/proc/stat`` is unreadable (not Linux) nothing is
checked.
"""
from __future__ import annotations

import time
from pathlib import Path

from pruningnet.errors import UserError

#: How long the machine is watched, and the slack below the CPUs needed that still counts as idle.
WINDOW_S = 0.3
SLACK_CPUS = 0.25


def _cpu_times(stat: Path) -> tuple[float, float] | None:
    """(idle, total) jiffies of all CPUs from the aggregate ``cpu`` line of /proc/stat."""
    try:
        fields = stat.read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu" or len(fields) < 5:
        return None
    vals = [float(v) for v in fields[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0.0)  # idle + iowait
    return idle, sum(vals[:8])  # guest time is already counted in user


def idle_cpus(window_s: float = WINDOW_S, stat: Path = Path("/proc/stat")) -> tuple[float, int] | None:
    """(CPUs idle on average over ``window_s``, CPUs of the machine), or None where unknown."""
    import os

    a = _cpu_times(stat)
    if a is None:
        return None
    time.sleep(window_s)
    b = _cpu_times(stat)
    n = os.cpu_count() or 1
    if b is None or b[1] <= a[1]:
        return None
    return n * (b[0] - a[0]) / (b[1] - a[1]), n


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
    if idle < need - SLACK_CPUS:
        raise UserError(
            f"the machine is busy: {idle:.1f} of {n} CPUs idle over {WINDOW_S} s, and timing with {threads} "
            f"thread(s) needs {need}; accepted: an idle machine, --threads 1 --clock cpu (CPU time, robust "
            "to other processes), or --busy-ok to time anyway")
