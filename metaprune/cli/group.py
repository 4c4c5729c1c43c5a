"""The ``metaprune`` click group and ``invoke``, the one place where user errors become one line and
exit 2. Command modules (``*_cmds.py``) import this module and attach their commands; ``main.py``
imports them all and runs the group, so no command module imports ``main``."""
from __future__ import annotations

from typing import Callable

import click

from pruningnet.errors import UserError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="metaprune")
def cli() -> None:
    """Find per-layer channel counts under a compute budget, MetaPruning-style, and prove the pick
    by training it from scratch.

    Costs are MACs (multiply-accumulates of conv and linear layers, BN folded): the unit that
    pruning papers call FLOPs. FLOPs in the strict sense are 2 x MACs.
    """


def invoke(argv: list[str] | None = None, before: Callable[[], None] | None = None) -> int:
    """Run the group on ``argv`` (after ``before()``, whose user errors count as the command's); user
    errors print ``metaprune: error: ...`` and return 2, and nothing raises."""
    try:
        if before is not None:
            before()
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
