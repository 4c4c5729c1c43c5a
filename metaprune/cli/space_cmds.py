"""``metaprune space``, ``cost`` and ``build``: spaces, specs and static models."""
from __future__ import annotations

import click

from pruningnet import build_model, count_cost, list_spaces
from pruningnet.cost import CONVENTIONS

from ..export import FORMATS, export_model
from ..spaces_summary import space_info, space_summary
from ..store.specfile import load_spec
from ..units import format_count
from .common import echo_json, json_option, options_option, parse_key_values
from .group import cli

CONVENTION_HELP = ("macs: conv + linear MACs, BN folded (the unit papers call FLOPs); metapruning: "
                   "MetaPruning's official counter (MACs plus BN outputs, pooling and linear biases; its "
                   "paper's FLOPs, e.g. 110.8M for variant=metapruning at uniform 0.4).")
convention_option = click.option("--convention", type=click.Choice(CONVENTIONS), default="macs",
                                 show_default=True, help=CONVENTION_HELP)


@cli.group()
def space() -> None:
    """List and inspect search spaces."""


@space.command("list")
@click.argument("pattern", default="*")
def space_list(pattern: str) -> None:
    """List registered spaces (PATTERN is a shell wildcard)."""
    for name in list_spaces(pattern):
        click.echo(f"{name:14s} {space_summary(name)}")


@space.command("show")
@click.argument("name")
@options_option
@convention_option
@json_option
def space_show(name: str, options: tuple[str, ...], convention: str, as_json: bool) -> None:
    """Print a space's units in run order and its smallest and largest member's cost (MACs = FLOPs)."""
    info = space_info(name, parse_key_values(options, "-o"), convention)
    if as_json:
        echo_json(info)
        return
    click.echo(f"space {info['space']}: {len(info['units'])} units")
    click.echo(f"{'unit':22s} {'max':>6s} {'choices':>8s}  range")
    for u in info["units"]:
        c = u["choices"]
        click.echo(f"{u['name']:22s} {u['max']:6d} {len(c):8d}  {c[0]}..{c[-1]}")
    click.echo(f"smallest: {format_count(info['min_macs'])} MACs, {format_count(info['min_params'])} params")
    click.echo(f"largest:  {format_count(info['max_macs'])} MACs, {format_count(info['max_params'])} params")
    if convention != "macs":
        click.echo(f"MetaPruning's counter: {format_count(info['min_flops_metapruning'])} to "
                   f"{format_count(info['max_flops_metapruning'])} FLOPs")


@cli.command()
@click.argument("spec_file", metavar="SPEC")
@convention_option
@json_option
def cost(spec_file: str, convention: str, as_json: bool) -> None:
    """MACs (conv + linear, BN folded; the papers' FLOPs) and parameters of a subnet spec."""
    c = count_cost(load_spec(spec_file), convention)
    if as_json:
        echo_json(c)
    else:
        click.echo(f"MACs:   {c['macs']:,} ({format_count(c['macs'])}; FLOPs = 2 x MACs)")
        click.echo(f"params: {c['params']:,} ({format_count(c['params'])})")
        if "flops_metapruning" in c:
            f = c["flops_metapruning"]
            click.echo(f"FLOPs, MetaPruning's counter: {f:,} ({format_count(f)}; MACs + BN, pooling, biases)")


@cli.command()
@click.argument("spec_file", metavar="SPEC")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="torchscript", show_default=True)
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="File to write.")
def build(spec_file: str, fmt: str, output: str) -> None:
    """Build a spec's network (random init) and write it as TorchScript or ONNX."""
    spec = load_spec(spec_file)
    opts = spec.space.options
    export_model(build_model(spec), output, fmt, opts["input_size"], opts["in_channels"])
    click.echo(f"wrote {output} ({fmt})")
