"""Entry point: registers every command module on the group (``group.py``), refuses bad environment
settings, and runs the command line."""
from __future__ import annotations

import sys

from pruningnet.errors import UserError

from ..process.malloc import malloc_mode
from .group import cli, invoke

__all__ = ["cli", "main", "run"]


def _register() -> None:
    for name in ("space_cmds", "pruningnet_cmds", "search_cmds", "train_cmds", "quickstart_cmds",
                 "latency_cmds", "serve_cmds", "baseline_cmds"):
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


def _check_env() -> None:
    malloc_mode()  # a bad METAPRUNE_MALLOC is refused here, not in a Ray worker or after a run is written
    _check_pointwise_env()  # likewise a bad METAPRUNE_POINTWISE_MAX_ELEMENTS


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; user errors print ``metaprune: error: ...`` and return 2."""
    _register()
    return invoke(argv, before=_check_env)


def run() -> None:
    sys.exit(main())
