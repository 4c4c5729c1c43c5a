"""Atomic writes: a reader sees the old file or the new one, never half of either."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # name the file the user asked for, not a temporary one
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are ordinary files
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror or str(e), str(path)) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


# --- reading: every document a user or an earlier run wrote goes through these -----------------
MAX_DOC_BYTES = 64 * 1024 * 1024  # specs, configs and state files are kilobytes; refuse a 300 MB one


def read_text(path: str | os.PathLike, what: str, max_bytes: int = MAX_DOC_BYTES) -> str:
    """A UTF-8 text file, or one :class:`UserError` line naming ``what`` and the path."""
    from pruningnet.errors import UserError

    p = Path(path)
    if p.is_dir():
        raise UserError(f"{what} {str(p)!r} is a directory; accepted: a file")
    if not p.is_file():
        raise UserError(f"{what} {str(p)!r} does not exist")
    size = p.stat().st_size
    if size > max_bytes:
        raise UserError(f"{what} {str(p)!r} is {size:,} bytes; accepted: at most {max_bytes:,}")
    try:
        return p.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {str(p)!r} is not UTF-8 text (byte {e.start}); accepted: UTF-8 JSON/YAML") from None


def parse_json(text: str, what: str, path: str | os.PathLike, kind: type | None = dict) -> Any:
    """``json.loads`` with one-line errors: bad syntax (with its line), nesting too deep, wrong top type."""
    from pruningnet.errors import UserError

    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{what} {str(path)!r} is not valid JSON (line {e.lineno}: {e.msg})") from None
    except RecursionError:
        raise UserError(f"{what} {str(path)!r} is nested too deeply to be a metaprune file") from None
    if kind is not None and not isinstance(doc, kind):
        want = {dict: "a JSON object", list: "a JSON array"}.get(kind, kind.__name__)
        raise UserError(f"{what} {str(path)!r} holds {type(doc).__name__} {str(doc)[:40]!r}; accepted: {want}")
    return doc


def read_json(path: str | os.PathLike, what: str, kind: type | None = dict,
              keys: tuple[str, ...] = ()) -> Any:
    """A JSON document of type ``kind`` with the top-level ``keys``, or one :class:`UserError` line."""
    from pruningnet.errors import UserError

    doc = parse_json(read_text(path, what), what, path, kind)
    missing = [k for k in keys if k not in doc]
    if missing:
        raise UserError(f"{what} {str(path)!r} lacks {', '.join(missing)}: damaged or not written by metaprune")
    return doc


def remove_stale_temps(directory: str | os.PathLike) -> int:
    """Delete ``.NAME.*.tmp`` files that :func:`atomic_write` left behind when killed mid-write."""
    d = Path(directory)
    n = 0
    if d.is_dir():
        for f in d.glob(".*.tmp"):
            f.unlink(missing_ok=True)
            n += 1
    return n


def load_weights(path: str | os.PathLike, what: str, map_location: Any = "cpu") -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles.

    A truncated, foreign or malicious file raises one :class:`UserError` line. Torch's own message
    for a refused pickle suggests turning weights-only loading off, which would run the file's
    code: that advice is never shown.
    """
    import torch

    from pruningnet.errors import UserError

    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} {str(p)!r} does not exist")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same user-facing fault
        kind = "holds objects other than tensors (refused: it could run code)" \
            if "weights_only" in str(e) or "Unsupported global" in str(e) else "is truncated or not a torch file"
        raise UserError(f"{what} {str(p)!r} {kind}; it was not written by this metaprune run: "
                        "restore it or start the run anew") from None
