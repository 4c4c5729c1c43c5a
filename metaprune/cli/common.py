"""Shared CLI helpers: option parsing and output."""
from __future__ import annotations

import json
from typing import Any

import click
import yaml

from pruningnet.errors import UserError


def parse_key_values(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``("a=1", "b=[1,2]")`` -> ``{"a": 1, "b": [1, 2]}``; values are read as YAML scalars or lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"{flag} {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        try:
            parsed = yaml.safe_load(value) if value != "" else ""
        except yaml.YAMLError:
            parsed = value
        if isinstance(parsed, (int, float)) and not isinstance(parsed, bool) and ":" in value:
            parsed = value  # YAML 1.1 reads 0:1:0.1 as a base-60 number; it is a start:stop:step
        out[key.strip()] = parsed
    return out


def echo_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


options_option = click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
                              help="Space option, e.g. -o input_size=32 -o small_input=true "
                                   "-o num_classes=10 -o width_mult=1.0 -o round_to=8.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")


def check_device(ctx, param, value):
    """Click callback: ``cuda`` without a CUDA device is a usage error, not a RuntimeError later."""
    if value is not None and str(value).startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise click.BadParameter(f"{value!r}: no CUDA device is available here; accepted: auto, cpu",
                                     ctx=ctx, param=param)
    return value
