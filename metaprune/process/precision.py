"""Mixed precision and memory format for scratch training: one object per training run.

``precision``: ``fp32`` (default), ``bf16`` (autocast to bfloat16; no loss scaling needed) or
``fp16`` (autocast to float16 with a ``GradScaler``, whose state belongs in checkpoints).
``channels_last``: the model and its inputs in NHWC memory format (faster convolutions with cuDNN on
recent GPUs, and with oneDNN on the CPU: ``benchmarks/bench_scratch_layout.py``). Both work on the
CPU. Imports nothing but torch, so
``scripts/gpu_check.sh`` can use it on a machine without the rest of the project's dependencies.
"""
from __future__ import annotations

import contextlib

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast, loss scaling and memory format of one training run on ``device``."""

    def __init__(self, device: torch.device | str, precision: str = "fp32", channels_last: bool = False):
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r}; accepted: {', '.join(PRECISIONS)}")
        self.device = torch.device(device)
        self.precision = precision
        self.channels_last = channels_last
        self.scaler = torch.amp.GradScaler(self.device.type) if precision == "fp16" else None

    def model(self, model: nn.Module) -> nn.Module:
        return model.to(memory_format=torch.channels_last) if self.channels_last else model

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=_DTYPES[self.precision])

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer, before_step=None) -> None:
        """``loss.backward()`` and ``opt.step()``, scaled under fp16; ``before_step()`` sees unscaled
        gradients (e.g. Network Slimming's L1 term)."""
        if self.scaler is None:
            loss.backward()
            if before_step is not None:
                before_step()
            opt.step()
            return
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(opt)
        if before_step is not None:
            before_step()
        self.scaler.step(opt)
        self.scaler.update()

    def state_dict(self) -> dict:
        return {"scaler": self.scaler.state_dict()} if self.scaler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
