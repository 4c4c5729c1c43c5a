"""Reading and writing subnet spec files."""
from __future__ import annotations

import json
import os
from pathlib import Path

from pruningnet.errors import UserError
from pruningnet.spec import SubnetSpec, spec_from_dict

from .fileio import write_json


def load_spec(path: str | os.PathLike) -> SubnetSpec:
    """Load and validate a spec file; a missing file or bad JSON raises :class:`UserError`."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"spec file {str(p)!r} does not exist")
    try:
        doc = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"spec file {str(p)!r} is not valid JSON (line {e.lineno}: {e.msg})") from None
    return spec_from_dict(doc)


def save_spec(spec: SubnetSpec, path: str | os.PathLike) -> Path:
    """Write ``spec`` atomically as JSON."""
    return write_json(path, spec.to_dict())
