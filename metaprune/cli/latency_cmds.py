"""``metaprune latency build`` and ``latency check``: per-layer latency tables measured on this machine."""
from __future__ import annotations

import os
import time
import warnings
from pathlib import Path

import click

from pruningnet import get_space
from pruningnet.errors import UserError
from pruningnet.spaces.ir import Space

from ..latency import (LatencyTable, build_table, check_spec, current_key, default_table_path,
                       load_table)
from ..ranges import THREADS_RANGE
from ..latency.busy import check_idle
from ..latency.shapes import grid_shapes
from ..latency.table import DEFAULT_GRID_STEP
from ..latency.timing import TimingConfig, check_clock
from ..store.schemas import SPACE_FILE
from ..store.specfile import load_spec
from .common import check_device, echo_json, json_option, lock_run_if_inside, options_option, parse_key_values
from .group import cli


@cli.group()
def latency() -> None:
    """Per-layer latency lookup tables (ms, measured on this machine) and their end-to-end check."""


def _space_of(target: str, options: dict) -> tuple[Space, Path | None]:
    """The space named by TARGET: a run directory (its space.json) or a space name."""
    p = Path(target)
    if p.is_dir():
        if options:
            raise UserError(f"-o options apply to a SPACE, not to run directory {target!r} "
                            "(its space.json fixes the space)")
        sj = p / "space.json"
        if not os.path.lexists(sj):
            raise UserError(f"run directory {target!r} has no space.json; accepted: a run directory "
                            "or a space name")
        doc = SPACE_FILE.read(sj)
        return get_space(doc["space"], **doc["options"]), p
    if "/" in target or target.startswith("."):
        raise UserError(f"run directory {target!r} does not exist; accepted: a run directory or a space name")
    return get_space(target, **options), None


def _warn_to_stderr(message, category, filename, lineno, file=None, line=None) -> None:
    click.echo(f"metaprune: warning: {message}", err=True)


@latency.command("build")
@click.argument("target", metavar="RUN|SPACE")
@options_option
@click.option("--device", default="cpu", show_default=True, callback=check_device, help="cpu or cuda.")
@click.option("--batch-size", type=click.IntRange(1, 1 << 16), default=1, show_default=True)
@click.option("--threads", type=click.IntRange(*THREADS_RANGE), default=None,
              help="torch threads while timing [default: torch's].")
@click.option("--grid-step", type=click.IntRange(1, 64), default=DEFAULT_GRID_STEP, show_default=True,
              help="Dense convs are timed at every Nth (in, out) choice and interpolated; 1 = exact.")
@click.option("--clock", default="wall", show_default=True,
              help="wall (latency), or cpu: the timing thread's CPU time, robust to other processes on a "
                   "busy machine (needs --threads 1).")
@click.option("--out", type=click.Path(dir_okay=False),
              help="Table file [default for RUN: RUN/latency/table.json; required for SPACE].")
@click.option("--busy-ok", is_flag=True,
              help="Time even when other processes keep the CPUs busy (refused by default with the wall clock).")
@json_option
def latency_build(target: str, options: tuple[str, ...], device: str, batch_size: int, threads: int | None,
                  grid_step: int, clock: str, out: str | None, busy_ok: bool, as_json: bool) -> None:
    """Measure a latency table for a run's space (RUN/space.json) or for SPACE with -o options.

    Entries already in an existing table of the same key are kept; progress is saved as it goes.
    """
    space, run_dir = _space_of(target, parse_key_values(options, "-o"))
    if out is None:
        if run_dir is None:
            raise UserError("--out FILE is required when building for a space name")
        out = str(default_table_path(run_dir))
    if run_dir is not None:
        lock_run_if_inside(run_dir, out, "latency build")
    key = current_key(device, batch_size, threads)
    check_clock(clock, key.device, key.threads)
    check_idle(key.device, key.threads, clock, busy_ok)
    n = len(grid_shapes(space, grid_step)) if isinstance(grid_step, int) and grid_step >= 1 else 0
    if not as_json:
        click.echo(f"timing up to {n} layer shapes of {space.name} on {key.device} ({key.device_name}), "
                   f"{key.threads} threads, batch {key.batch_size}, {clock} clock", err=True)
    t0 = time.perf_counter()

    def progress(i: int, total: int) -> None:
        if not as_json and (i == total or i % 500 == 0):
            click.echo(f"  {i}/{total} shapes, {time.perf_counter() - t0:.0f} s", err=True)

    table = build_table(space, device, batch_size, key.threads, grid_step, TimingConfig(clock=clock),
                        path=out, progress=progress)
    cm_lo, cm_hi = table.predict_ms(space, [space.min_channels(), space.max_channels()])
    info = {"table": out, "space": space.name, "entries": len(table.entries), "measured": table.measured,
            "seconds": round(time.perf_counter() - t0, 1), "key": table.key.to_dict(),
            "grid_step": table.grid_step, "clock": clock, "min_latency_ms": round(float(cm_lo), 4),
            "max_latency_ms": round(float(cm_hi), 4)}
    if as_json:
        echo_json(info)
    else:
        click.echo(f"wrote {out}: {info['entries']} entries ({info['measured']} measured in "
                   f"{info['seconds']} s); {space.name} predicted {info['min_latency_ms']:.3f} ms "
                   f"(narrowest) to {info['max_latency_ms']:.3f} ms (widest)")


@latency.command("check")
@click.argument("spec_file", metavar="SPEC")
@click.option("--table", "table_file", type=click.Path(dir_okay=False),
              help="Latency table [default: an in-memory table measured now for this spec only].")
@click.option("--device", default="cpu", show_default=True, callback=check_device, help="Without --table: cpu or cuda.")
@click.option("--threads", type=click.IntRange(*THREADS_RANGE), default=None,
              help="Without --table: torch threads.")
@click.option("--clock", default="wall", show_default=True, help="Without --table: wall or cpu.")
@click.option("--busy-ok", is_flag=True,
              help="Time even when other processes keep the CPUs busy (refused by default with the wall clock).")
@json_option
def latency_check(spec_file: str, table_file: str | None, device: str, threads: int | None, clock: str,
                  busy_ok: bool, as_json: bool) -> None:
    """Time SPEC's built model end to end and print it against the table's prediction."""
    spec = load_spec(spec_file)
    if table_file is not None:
        with warnings.catch_warnings():
            warnings.showwarning = _warn_to_stderr
            warnings.simplefilter("always")
            table = load_table(table_file)
    else:
        key = current_key(device, 1, threads)
        check_clock(clock, key.device, key.threads)
        table = LatencyTable(key, TimingConfig(clock=clock))
    check_idle(table.key.device, table.key.threads, table.timing.clock, busy_ok)
    r = check_spec(spec, table)
    if as_json:
        echo_json({**r.to_dict(), "table": table_file})
        return
    click.echo(f"predicted: {r.predicted_ms:.3f} ms  ({'table ' + table_file if table_file else 'measured now'})")
    click.echo(f"measured:  {r.measured_ms:.3f} ms  (median, {r.device}, {r.threads} threads, batch {r.batch_size}, {r.clock} clock)")
    click.echo(f"error:     {r.error_pct:+.1f}%")
