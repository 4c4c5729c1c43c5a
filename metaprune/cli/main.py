"""Entry point: the click group and the one place where user errors become one line and exit 2."""
from __future__ import annotations

import sys

import click

from pruningnet.errors import UserError

from ..process.malloc import malloc_mode


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="metaprune")
def cli() -> None:
    """Find per-layer channel counts under a compute budget, MetaPruning-style, and prove the pick
    by training it from scratch.

    Costs are MACs (multiply-accumulates of conv and linear layers, BN folded): the unit that
    pruning papers call FLOPs. FLOPs in the strict sense are 2 x MACs.
    """


def _register() -> None:
    from . import space_cmds  # noqa: F401
    for name in ("pruningnet_cmds", "search_cmds", "train_cmds", "quickstart_cmds", "latency_cmds", "serve_cmds", "baseline_cmds"):
        try:
            __import__(f"{__package__}.{name}")
        except ModuleNotFoundError as e:
            if e.name != f"{__package__}.{name}":
                raise


def _check_pointwise_env() -> None:
    from pruningnet.pointwise import default_max_elements

    try:
        default_max_elements()
    except ValueError as e:
        raise UserError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print ``metaprune: error: ...`` and return 2."""
    _register()
    try:
        malloc_mode()  # a bad METAPRUNE_MALLOC is refused here, not in a Ray worker or after a run is written
        _check_pointwise_env()  # likewise a bad METAPRUNE_POINTWISE_MAX_ELEMENTS
        cli.main(args=argv, prog_name="metaprune", standalone_mode=False)
    except click.exceptions.NoArgsIsHelpError as e:
        click.echo(e.ctx.get_help() if e.ctx else str(e))
        return 0
    except click.UsageError as e:
        msg = e.format_message().replace("\n", " ")
        if e.ctx is not None:
            msg = f"{e.ctx.command_path}: {msg}"
        click.echo(f"metaprune: error: {msg}", err=True)
        return 2
    except click.ClickException as e:
        click.echo(f"metaprune: error: {e.format_message()}", err=True)
        return 2
    except UserError as e:
        click.echo(f"metaprune: error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("metaprune: aborted; meta-training, search and scratch training continue from their "
                   "last checkpoint with --resume", err=True)
        return 130
    except OSError as e:  # unwritable -o path, read-only run directory, full disk, ...
        where = f" {str(e.filename)!r}" if e.filename else ""
        click.echo(f"metaprune: error: cannot use{where}: {e.strerror or e}; nothing was changed there", err=True)
        return 2
    except RecursionError:
        click.echo("metaprune: error: an input file is nested too deeply; accepted: metaprune's own "
                   "flat JSON/YAML documents", err=True)
        return 2
    except click.exceptions.Exit as e:
        return e.exit_code
    return 0


def run() -> None:
    sys.exit(main())
