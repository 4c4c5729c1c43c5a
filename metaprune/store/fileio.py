"""Atomic writes and guarded reads.

Writes: a reader sees the old file or the new one, never half of either; a write that fails (a full
disk, a read-only directory) raises :class:`OSError` naming the file and leaves the old one as it was.

Reads: every document a user or an earlier run wrote goes through :func:`read_text` (or
:func:`read_json`, :func:`load_weights`), which never block and never read more than a cap: the file
is checked to be a regular file before it is opened and again (``fstat``) after it is opened with
``O_NONBLOCK`` (so a FIFO, a socket or a device is refused in one line, never waited on), and a
file inside a run directory is opened with ``O_NOFOLLOW`` (``follow=False``: a symbolic link there
is refused instead of showing a file from elsewhere). Every refusal is one :class:`UserError` line.
"""
from __future__ import annotations

import errno
import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping


def _named(e: OSError, path: Path) -> OSError:
    """``e`` naming ``path`` (the file the user asked for, not a temporary one)."""
    return OSError(e.errno, e.strerror or str(e), str(path))


def _temp_beside(path: Path) -> Path:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise _named(e, path) from None
    os.close(fd)
    return Path(tmp)


def _seal(tmp: Path) -> None:
    """fsync ``tmp`` and give it an ordinary file's mode (mkstemp makes 0600)."""
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp_path)`` then rename the temporary file over ``path``."""
    path = Path(path)
    tmp = _temp_beside(path)
    try:
        write(tmp)
        _seal(tmp)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise _named(e, path) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def atomic_write_many(texts: Mapping[str | os.PathLike, str]) -> list[Path]:
    """Write several text files all or nothing: every one to a temporary file first, then all
    renamed. A failed write (a full disk) leaves every file as it was and raises :class:`OSError`
    naming the file whose write failed."""
    temps: list[tuple[Path, Path]] = []
    try:
        for path, text in texts.items():
            path = Path(path)
            tmp = _temp_beside(path)
            temps.append((tmp, path))
            try:
                tmp.write_text(text)
                _seal(tmp)
            except OSError as e:
                raise _named(e, path) from None
        for tmp, path in temps:
            os.replace(tmp, path)
    finally:
        for tmp, _ in temps:
            tmp.unlink(missing_ok=True)
    return [p for _, p in temps]


class _RecordingWriter:
    """A file object for ``torch.save`` that keeps the :class:`OSError` of a failed write: torch
    reports it as a bare ``RuntimeError`` ("unexpected pos ..."), which would hide a full disk."""

    def __init__(self, f):
        self.f, self.error = f, None

    def write(self, b) -> int:
        try:
            return self.f.write(b)
        except OSError as e:
            self.error = e
            raise

    def flush(self) -> None:
        try:
            self.f.flush()
        except OSError as e:
            self.error = e
            raise


def atomic_save(path: str | os.PathLike, obj: Any) -> Path:
    """``torch.save(obj)`` to ``path`` atomically; a failed write (a full disk) raises :class:`OSError`
    naming ``path``, and the file that was there is left as it was."""
    import torch

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            w = _RecordingWriter(f)
            try:
                torch.save(obj, w)
            except RuntimeError:
                if w.error is not None:
                    raise w.error from None
                raise

    return atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write(path, lambda p: p.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, dumps_json(obj))


def dumps_json(obj: Any) -> str:
    """The text :func:`write_json` writes."""
    return json.dumps(obj, indent=2, sort_keys=False) + "\n"


# --- reading: every document a user or an earlier run wrote goes through these -----------------
MAX_DOC_BYTES = 64 * 1024 * 1024  # specs, configs and state files are kilobytes; refuse a 300 MB one
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISLNK, "a symbolic link"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def open_regular(path: str | os.PathLike, what: str, follow: bool = True) -> int:
    """A read-only fd of the regular file ``path``, opened without blocking (``O_NONBLOCK``) and,
    with ``follow=False``, without following a symbolic link; anything else is one
    :class:`UserError` line. The caller closes the fd."""
    from pruningnet.errors import UserError

    p = str(path)
    try:
        st = os.stat(p, follow_symlinks=follow)
    except FileNotFoundError:
        raise UserError(f"{what} {p!r} does not exist") from None
    except OSError as e:  # ENOTDIR (a component is a file), ELOOP, EACCES, ENAMETOOLONG
        if e.errno == errno.ENOTDIR:
            raise UserError(f"{what} {p!r} does not exist (a part of the path is a file)") from None
        raise UserError(f"{what} {p!r} cannot be read ({e.strerror})") from None
    if stat.S_ISDIR(st.st_mode):
        raise UserError(f"{what} {p!r} is a directory; accepted: a file")
    if not stat.S_ISREG(st.st_mode):  # refused before it is opened: opening a device may itself act
        raise UserError(f"{what} {p!r} is {_kind(st.st_mode)}, not a regular file; accepted: a file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)
    if not follow:
        flags |= os.O_NOFOLLOW
    try:
        fd = os.open(p, flags)
    except FileNotFoundError:
        raise UserError(f"{what} {p!r} does not exist") from None
    except OSError as e:
        why = "is a symbolic link" if e.errno == errno.ELOOP else \
            "is a socket" if e.errno == errno.ENXIO else f"cannot be read ({e.strerror})"
        raise UserError(f"{what} {p!r} {why}; accepted: a regular file") from None
    st = os.fstat(fd)  # what was opened: it may have been swapped since the stat above
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise UserError(f"{what} {p!r} is {_kind(st.st_mode)}, not a regular file; accepted: a file")
    return fd


def read_capped(fd: int, limit: int) -> bytes | None:
    """The bytes of an open file, or ``None`` if it holds more than ``limit`` (a file may grow while
    it is read: never more than ``limit + 1`` bytes are read)."""
    chunks, n = [], 0
    while n <= limit:
        b = os.read(fd, min(1 << 20, limit + 1 - n))
        if not b:
            break
        chunks.append(b)
        n += len(b)
    return None if n > limit else b"".join(chunks)


def read_text(path: str | os.PathLike, what: str, max_bytes: int = MAX_DOC_BYTES, follow: bool = True) -> str:
    """A UTF-8 text file of at most ``max_bytes``, or one :class:`UserError` line naming ``what`` and
    the path. Never blocks: a FIFO, socket or device is refused (see :func:`open_regular`);
    ``follow=False`` (files inside a run directory) also refuses a symbolic link."""
    from pruningnet.errors import UserError

    p = str(path)
    fd = open_regular(path, what, follow)
    try:
        size = os.fstat(fd).st_size
        if size > max_bytes:
            raise UserError(f"{what} {p!r} is {size:,} bytes; accepted: at most {max_bytes:,}")
        try:
            data = read_capped(fd, max_bytes)
        except OSError as e:
            raise UserError(f"{what} {p!r} cannot be read ({e.strerror})") from None
        if data is None:
            raise UserError(f"{what} {p!r} is over {max_bytes:,} bytes; accepted: at most {max_bytes:,}")
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UserError(f"{what} {p!r} is not UTF-8 text (byte {e.start}); accepted: UTF-8 JSON/YAML") from None


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
              keys: tuple[str, ...] = (), follow: bool = True, max_bytes: int = MAX_DOC_BYTES) -> Any:
    """A JSON document of type ``kind`` with the top-level ``keys``, or one :class:`UserError` line.
    Never blocks (see :func:`read_text`); ``follow=False`` for files inside a run directory."""
    from pruningnet.errors import UserError

    doc = parse_json(read_text(path, what, max_bytes, follow), what, path, kind)
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


def load_weights(path: str | os.PathLike, what: str, map_location: Any = "cpu", follow: bool = True) -> Any:
    """``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary pickles.

    The file is opened as :func:`read_text` opens one (a regular file, never blocking; ``follow=False``
    refuses a symbolic link). A truncated, foreign or malicious file raises one :class:`UserError`
    line. Torch's own message for a refused pickle suggests turning weights-only loading off, which
    would run the file's code: that advice is never shown.
    """
    import torch

    from pruningnet.errors import UserError

    p = Path(path)
    fd = open_regular(p, what, follow)
    try:
        with os.fdopen(fd, "rb") as f:
            return torch.load(f, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure to read is the same user-facing fault
        kind = "holds objects other than tensors (refused: it could run code)" \
            if "weights_only" in str(e) or "Unsupported global" in str(e) else "is truncated or not a torch file"
        raise UserError(f"{what} {str(p)!r} {kind}; it was not written by this metaprune run: "
                        "restore it or start the run anew") from None
