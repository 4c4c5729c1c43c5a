"""Reading a runs directory that someone else may write to: regular files only, never blocking,
never following a symbolic link, never more than a cap.

A run directory is data, not trust: a FIFO named ``status.json`` would block a plain ``open``
forever, a symbolic link would show a file from outside the tree, a 10 GB ``metrics.jsonl`` would
take the server's memory, a YAML alias bomb in ``config.yaml`` expands to gigabytes. Every read the
service makes of a run goes through :func:`read_bytes` (or :func:`tail_bytes`), which open each path
component relative to the runs directory with ``O_NOFOLLOW`` (directories with ``O_DIRECTORY``), the
file itself with ``O_NONBLOCK``, check ``fstat`` is a regular file and read at most the cap. A file
that fails raises :class:`Damaged` with a one-line reason; a missing file is ``None``.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any

from pruningnet.errors import UserError

from ..store.fileio import read_capped

MAX_JSON_BYTES = 8 << 20  # status, front, candidates, logbook, results: kilobytes to a few MB
MAX_YAML_BYTES = 1 << 20  # a run's config.yaml
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0)


class Damaged(Exception):
    """A run file that cannot be used; ``str(e)`` is one line naming the file and why."""


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISLNK, "a symbolic link"),
                       (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(root: Path, rel: str) -> int | None:
    """An fd of ``root/rel`` opened without following links or blocking; ``None`` if it is missing."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise Damaged(f"{rel} is not a plain relative path")
    try:
        dfd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise Damaged(f"{root.name} cannot be opened ({e.strerror})") from None
    try:
        for i, part in enumerate(parts[:-1]):
            try:
                nfd = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            except FileNotFoundError:
                return None
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise Damaged(f"{'/'.join(parts[:i + 1])} is not a directory (a link or a file)") from None
                raise Damaged(f"{'/'.join(parts[:i + 1])} cannot be opened ({e.strerror})") from None
            os.close(dfd)
            dfd = nfd
        try:
            st = os.stat(parts[-1], dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):  # refused before open: opening a device may itself act
            raise Damaged(f"{rel} is {_kind(st.st_mode)}, not a regular file")
        try:
            fd = os.open(parts[-1], _FILE_FLAGS, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise Damaged(f"{rel} is a symbolic link, not a regular file") from None
            raise Damaged(f"{rel} cannot be opened ({e.strerror})") from None
    finally:
        os.close(dfd)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):  # swapped between the stat and the open
        os.close(fd)
        raise Damaged(f"{rel} is {_kind(st.st_mode)}, not a regular file")
    return fd


def read_bytes(root: Path, rel: str, limit: int) -> bytes | None:
    """The bytes of ``root/rel`` (at most ``limit``), ``None`` if missing; :class:`Damaged` else."""
    fd = open_regular(root, rel)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        if size > limit:
            raise Damaged(f"{rel} is {size:,} bytes; at most {limit:,} are read")
        data = read_capped(fd, limit)
        if data is None:
            raise Damaged(f"{rel} grew past {limit:,} bytes while read")
        return data
    except BlockingIOError:
        raise Damaged(f"{rel} would block; not a regular file") from None
    finally:
        os.close(fd)


def tail_bytes(root: Path, rel: str, limit: int) -> tuple[bytes, bool] | None:
    """The last ``limit`` bytes of ``root/rel`` and whether it was cut; ``None`` if missing."""
    fd = open_regular(root, rel)
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        start = max(0, size - limit)
        os.lseek(fd, start, os.SEEK_SET)
        chunks, n = [], 0
        while n < limit:
            b = os.read(fd, min(1 << 20, limit - n))
            if not b:
                break
            chunks.append(b)
            n += len(b)
        return b"".join(chunks), start > 0
    finally:
        os.close(fd)


def exists_regular(root: Path, rel: str) -> bool:
    """``root/rel`` is a regular file reached without links (a damaged one counts as absent)."""
    try:
        fd = open_regular(root, rel)
    except Damaged:
        return False
    if fd is None:
        return False
    os.close(fd)
    return True


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(data: bytes, rel: str) -> Any:
    """JSON without NaN/Infinity (a browser cannot parse them back); :class:`Damaged` on any error."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constants)
    except (UnicodeDecodeError, ValueError) as e:
        raise Damaged(f"{rel} is not valid JSON ({str(e).splitlines()[0][:80]})") from None
    except RecursionError:
        raise Damaged(f"{rel} is nested too deeply") from None


def read_json(root: Path, rel: str, limit: int = MAX_JSON_BYTES) -> Any:
    """A JSON document of ``root/rel``; ``None`` if missing; :class:`Damaged` if unusable."""
    data = read_bytes(root, rel, limit)
    return None if data is None else parse_json(data, rel)


def read_yaml(root: Path, rel: str, limit: int = MAX_YAML_BYTES) -> Any:
    """A YAML document of ``root/rel`` (no anchors or aliases: :func:`metaprune.config.load_yaml`);
    ``None`` if missing; :class:`Damaged` if unusable."""
    from ..config import load_yaml

    data = read_bytes(root, rel, limit)
    if data is None:
        return None
    try:
        return load_yaml(data.decode("utf-8"), rel)
    except UnicodeDecodeError:
        raise Damaged(f"{rel} is not UTF-8 text") from None
    except UserError as e:
        raise Damaged(str(e)[:200]) from None


def is_real_dir(root: Path, rel: str) -> bool:
    """``root/rel`` is a directory, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(root / rel).st_mode)
    except OSError:
        return False


def open_private(path: Path, flags: int, mode: int = 0o600) -> int:
    """``os.open`` of a service file (token, lock, log) that refuses a link or a non-regular file."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK, mode)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise Damaged(f"{path} is {_kind(st.st_mode)}, not a regular file")
    os.set_blocking(fd, True)
    return fd
