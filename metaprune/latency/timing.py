"""Timing a module: fixed torch threads, warm-up calls, median of samples; CUDA synchronised.

``clock="wall"`` (default) is latency proper. ``clock="cpu"`` reads the calling thread's CPU time
instead: with one torch thread all compute runs on that thread, so it equals the latency of an idle
machine while ignoring time the thread spent preempted by other processes (use it to build and
check tables on a busy box; it is refused with more than one thread and on CUDA).

Each sample times enough back-to-back calls to last at least ``min_sample_ms`` and reports their
mean, so a sample of a 20 us layer is not dominated by the timer; the result is the median sample.
On CUDA (``cuda_graphs``, the default) the call is captured once in a CUDA graph and its replays are
timed, as a deployment that captures its model runs it: eager calls of a small network at batch 1 or
32 are bound by kernel launches, whose cost moved 26-45% between rounds on an H200 (issue 29), and a
table summed from eager per-layer launches mispredicted whole networks by 11-36%. Entries and
end-to-end timings are taken the same way. The CPU path is unchanged.

Host memory is steadied first (:mod:`metaprune.process.malloc`), so that entries and end-to-end
timings are both taken in the steady state a served model runs in.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Iterator, Sequence

import torch
from torch import nn

from pruningnet.errors import UserError

from ..process.malloc import steady_allocator
from .machine import check_device


@dataclass(frozen=True)
class TimingConfig:
    """How each entry and each end-to-end model is timed."""

    warmup: int = 3
    repeats: int = 7
    min_sample_ms: float = 1.0
    clock: str = "wall"  # "wall" or "cpu" (thread CPU time; one thread, CPU only)
    cuda_graphs: bool = True  # on CUDA, time replays of a CUDA graph of the call (ignored on the CPU)

    def to_dict(self) -> dict:
        return asdict(self)


#: End-to-end timings (calibration, ``latency check``): more samples, since each is one long call.
MODEL_TIMING = TimingConfig(warmup=5, repeats=15, min_sample_ms=1.0)
CLOCKS = ("wall", "cpu")


def check_clock(clock: str, device: str, threads: int) -> None:
    """Refuse a clock that cannot measure latency under these settings."""
    if clock not in CLOCKS:
        raise UserError(f"clock {clock!r} is not supported; accepted: {', '.join(CLOCKS)}")
    if clock == "cpu" and (device != "cpu" or threads != 1):
        raise UserError(f"clock 'cpu' needs device cpu and 1 thread (got {device}, {threads} threads); "
                        "accepted otherwise: wall")


@contextlib.contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the body with ``torch.set_num_threads(threads)``, restoring the old value after."""
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def uses_graphs(timing: TimingConfig, device: str) -> bool:
    """Whether calls are timed as CUDA graph replays (CUDA and ``timing.cuda_graphs``)."""
    return timing.cuda_graphs and torch.device(device).type == "cuda"


def cuda_graph_call(module: nn.Module, inputs: Sequence[torch.Tensor], warmup: int = 3):
    """``module(*inputs)`` captured in a CUDA graph (after ``warmup`` eager calls on a side stream,
    as torch's capture recipe asks); returns the graph's ``replay``. Inputs are the captured tensors:
    a replay reads whatever they hold then."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(max(1, warmup)):
            module(*inputs)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        module(*inputs)
    return graph.replay


def time_call_ms(module: nn.Module, inputs: Sequence[torch.Tensor], device: str = "cpu",
                 timing: TimingConfig = TimingConfig()) -> float:
    """Median latency in ms of ``module(*inputs)`` (module in eval mode, inference mode; on CUDA with
    ``timing.cuda_graphs``, replays of its CUDA graph)."""
    steady_allocator()
    cuda = torch.device(device).type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    clock = time.thread_time if timing.clock == "cpu" and not cuda else time.perf_counter
    module.eval()
    with torch.inference_mode():
        call = (cuda_graph_call(module, inputs, timing.warmup) if uses_graphs(timing, device)
                else lambda: module(*inputs))
        sync()
        t0 = clock()
        for _ in range(max(1, timing.warmup)):
            call()
        sync()
        per_call_ms = (clock() - t0) * 1e3 / max(1, timing.warmup)
        inner = max(1, int(timing.min_sample_ms / max(per_call_ms, 1e-4)))
        samples = []
        for _ in range(max(1, timing.repeats)):
            sync()
            t0 = clock()
            for _ in range(inner):
                call()
            sync()
            samples.append((clock() - t0) * 1e3 / inner)
    return statistics.median(samples)


def measure_model_ms(model: nn.Module, input_size: int, in_channels: int, device: str = "cpu",
                     batch_size: int = 1, threads: int | None = None,
                     timing: TimingConfig = MODEL_TIMING) -> float:
    """End-to-end median latency in ms of ``model`` on a (batch, in_channels, size, size) input."""
    dev = check_device(device)
    threads = torch.get_num_threads() if threads is None else threads
    check_clock(timing.clock, device, threads)
    model = model.to(dev).eval()
    x = torch.randn(batch_size, in_channels, input_size, input_size, device=dev)
    with torch_threads(threads):
        return time_call_ms(model, (x,), device, timing)
