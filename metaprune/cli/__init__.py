"""The ``metaprune`` command line. Each command group lives in its own module."""
from .main import cli, main

__all__ = ["cli", "main"]
