"""Writing a built model as TorchScript or ONNX: files that need neither metaprune nor its spaces."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
from torch import nn

from pruningnet.errors import UserError

from .store.fileio import atomic_write

FORMATS = ("torchscript", "onnx")


def export_model(model: nn.Module, path: str | os.PathLike, fmt: str, input_size: int,
                 in_channels: int) -> Path:
    """Trace ``model`` (in eval mode) on a 1-image batch and write it atomically as ``fmt``."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not supported; accepted: {', '.join(FORMATS)}")
    model = model.eval()
    example = torch.randn(1, in_channels, input_size, input_size)
    if fmt == "torchscript":
        def write(tmp: Path) -> None:
            with torch.no_grad():
                torch.jit.save(torch.jit.trace(model, example), str(tmp))
    else:
        def write(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(tmp), input_names=["input"],
                                  output_names=["logits"], dynamo=False, opset_version=17,
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return atomic_write(path, write)
