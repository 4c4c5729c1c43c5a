"""Shared CLI helpers: option parsing and output."""
from __future__ import annotations

import json
import math
from typing import Any

import click

from pruningnet.errors import UserError

from ..config import YamlSyntaxError, load_yaml


def parse_key_values(pairs: tuple[str, ...], flag: str) -> dict[str, Any]:
    """``("a=1", "b=[1,2]")`` -> ``{"a": 1, "b": [1, 2]}``; values are read as YAML scalars or lists."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise UserError(f"{flag} {pair!r} is not key=value")
        key, value = pair.split("=", 1)
        try:
            parsed = load_yaml(value, f"{flag} {pair!r}") if value != "" else ""
        except YamlSyntaxError:
            parsed = value  # not YAML: the text itself
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


class FiniteFloat(click.ParamType):
    """A finite number in ``[lo, hi]`` (``lo_open``: ``(lo, hi]``); click's ``float`` takes ``nan``
    and ``inf``, and ``FloatRange`` lets ``nan`` through."""

    name = "number"

    def __init__(self, lo: float, hi: float, lo_open: bool = False):
        self.lo, self.hi, self.lo_open = lo, hi, lo_open

    def convert(self, value, param, ctx):
        try:
            v = float(value)
        except (TypeError, ValueError):
            v = math.nan
        ok = math.isfinite(v) and (self.lo < v if self.lo_open else self.lo <= v) and v <= self.hi
        if not ok:
            self.fail(f"{value!r} is not accepted; accepted: a finite number in "
                      f"{'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}]", param, ctx)
        return v


#: ``--cpus-per-trial`` / ``--gpus-per-trial``: finite amounts (``nan`` used to reach plan.json).
CPUS_PER_TRIAL = FiniteFloat(0.0, 1024.0, lo_open=True)
GPUS_PER_TRIAL = FiniteFloat(0.0, 64.0)


def lock_run(run_dir, job: str, create: bool = False):
    """Hold the run lock (:func:`metaprune.store.runlock.run_lock`) on ``run_dir`` until the running
    command ends: one call in a command body, released when click closes the command's context
    (``create``: make the directory of a new run first)."""
    from ..store.runlock import run_lock

    return click.get_current_context().with_resource(run_lock(run_dir, job, create=create))


def lock_run_if_inside(run_dir, path, job: str) -> None:
    """Hold ``run_dir``'s lock (:func:`lock_run`) when ``path`` (a file about to be written, or a
    spec beside it) lands inside the run directory: one writer per run. Elsewhere, no lock."""
    import os
    from pathlib import Path

    try:
        inside = Path(os.path.realpath(path)).is_relative_to(os.path.realpath(run_dir))
    except OSError:
        inside = False
    if inside:
        lock_run(run_dir, job)
