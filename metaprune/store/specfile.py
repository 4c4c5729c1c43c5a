"""Reading and writing subnet spec files."""
from __future__ import annotations

import os
from pathlib import Path

from pruningnet.spec import SubnetSpec, spec_from_dict

from .fileio import read_json, write_json


def load_spec(path: str | os.PathLike) -> SubnetSpec:
    """Load and validate a spec file; a missing file or bad JSON raises :class:`UserError`."""
    return spec_from_dict(read_json(path, "spec file"))


def save_spec(spec: SubnetSpec, path: str | os.PathLike) -> Path:
    """Write ``spec`` atomically as JSON."""
    return write_json(path, spec.to_dict())
