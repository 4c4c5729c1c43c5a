"""What a latency table is keyed by: the device, torch threads, batch size and torch version."""
from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass

import torch

from pruningnet.errors import UserError

DEVICES = ("cpu", "cuda")


@dataclass(frozen=True)
class MachineKey:
    """The settings a latency table was measured under; tables only transfer between equal keys."""

    device: str  # "cpu" or "cuda"
    device_name: str  # CPU model or CUDA device name
    threads: int  # torch.set_num_threads during timing
    batch_size: int
    torch: str  # torch.__version__

    def to_dict(self) -> dict:
        return asdict(self)

    def mismatches(self, other: "MachineKey") -> list[str]:
        """``"field: mine != other"`` for every field that differs."""
        return [f"{k}: {v!r} != {getattr(other, k)!r}" for k, v in asdict(self).items()
                if v != getattr(other, k)]


def check_device(device: str) -> torch.device:
    """``device`` as a torch device; an unknown or unavailable one raises :class:`UserError`."""
    if device not in DEVICES:
        raise UserError(f"device {device!r} is not supported; accepted: {', '.join(DEVICES)}")
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' is not available here (torch.cuda.is_available() is False); "
                        "accepted: cpu")
    return torch.device(device)


def device_name(device: str) -> str:
    """A human-readable name of the CPU model or the CUDA device."""
    if device == "cuda":
        return torch.cuda.get_device_name(torch.cuda.current_device())
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()} x{os.cpu_count()}"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()} x{os.cpu_count()}"


def current_key(device: str = "cpu", batch_size: int = 1, threads: int | None = None) -> MachineKey:
    """The key of this machine for ``device`` (checked), ``batch_size`` and ``threads``
    (default: ``torch.get_num_threads()``)."""
    check_device(device)
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"batch size {batch_size!r} must be an integer >= 1")
    if threads is None:
        threads = torch.get_num_threads()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads {threads!r} must be an integer >= 1")
    return MachineKey(device, device_name(device), threads, batch_size, torch.__version__)
