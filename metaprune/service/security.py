"""Secure-by-default plumbing: the token, the server lock, Host/Origin checks, response headers.

- A random token lives in ``RUNS_DIR/service-token`` (mode 0600, created on first start). Every
  ``/api`` route needs it in a header: ``Authorization: Bearer TOKEN`` or ``X-Metaprune-Token: TOKEN``.
  The page keeps the token it was opened with (``/?token=TOKEN``) in the tab's ``sessionStorage``,
  which is per origin (scheme, host *and port*), and sends the header itself. There is no cookie: a
  browser sends a host's cookies to every port of that host, so a page served by anyone on another
  local port would receive it. A browser never adds the header on its own, so another page cannot
  make requests in the user's name (no cross-site request forgery), and the old cookie is expired.
- ``Host`` must name this server (loopback names, or the ``--host`` given with ``--allow-remote``):
  a DNS-rebinding page cannot reach it. State-changing requests (anything but GET/HEAD/OPTIONS) that
  a browser marks as coming from another site (``Sec-Fetch-Site``) or another origin (``Origin``,
  compared as scheme, host and port against this server's own) are refused whatever they carry.
- The token file is read without following a link, must be a regular file of the server's user with
  no group or other permissions, and must hold at least 43 URL-safe characters (32 random bytes).
- One server per runs directory: ``RUNS_DIR/service.lock`` is held with an exclusive ``flock`` for
  the server's life; a second server is refused, naming the holder's pid.
- Every response carries a Content-Security-Policy without inline script, ``nosniff`` and
  ``no-referrer``; bodies above ``MAX_BODY_BYTES`` get 413.
"""
from __future__ import annotations

import errno
import fcntl
import hmac
import os
import re
import secrets
import stat
from pathlib import Path
from urllib.parse import urlsplit

from pruningnet.errors import UserError

TOKEN_FILE = "service-token"
LOCK_FILE = "service.lock"
LEGACY_COOKIE = "metaprune_token"
MAX_BODY_BYTES = 64 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
TOKEN_RE = re.compile(r"^[A-Za-z0-9_-]{43,512}$")
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
#: the hash of the empty string: Plotly.js creates an empty <style> element and fills it through the
#: CSSOM (which CSP does not govern); any inline style with content stays refused
EMPTY_STYLE = "'sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU='"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; "
                               f"frame-ancestors 'none'; form-action 'self'; style-src 'self' {EMPTY_STYLE}; "
                               "img-src 'self' data: blob:; connect-src 'self'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
}


def _token_error(f: Path, why: str) -> UserError:
    return UserError(f"token file {str(f)!r} {why}")


def load_or_create_token(runs_dir: Path) -> str:
    """The runs directory's token, created (mode 0600, 32 random bytes) when missing.

    Refused, with one line saying how to fix it: a link, a non-regular file, a file of another user,
    one readable or writable by group or other (it is never silently chmodded: someone may have read
    it already), or a token shorter than 43 URL-safe characters."""
    f = Path(runs_dir) / TOKEN_FILE
    try:
        fd = os.open(f, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        return _create_token(f)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise _token_error(f, "is a symbolic link; accepted: a regular file (delete the link, and a new "
                                  "token file is made)") from None
        raise _token_error(f, f"cannot be read ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise _token_error(f, "is not a regular file; delete it, and a new token file is made")
        if st.st_uid != os.geteuid():
            raise _token_error(f, f"belongs to uid {st.st_uid}, not this user ({os.geteuid()}); delete it, and a "
                                  "new token file is made")
        if st.st_mode & 0o077:
            raise _token_error(f, f"has mode {stat.S_IMODE(st.st_mode):04o}: readable or writable by others, "
                                  "who may know the token; delete it (a new one is made) or, if nobody else "
                                  f"read it, chmod 600 {f}")
        data = os.read(fd, 1024)
    finally:
        os.close(fd)
    tok = data.decode("ascii", "replace").strip()
    if not TOKEN_RE.match(tok):
        raise _token_error(f, "does not hold a token of at least 43 URL-safe characters (A-Z, a-z, 0-9, '-', "
                              "'_': 32 random bytes); delete it, and a new token file is made")
    return tok


def _create_token(f: Path) -> str:
    tok = secrets.token_urlsafe(32)
    try:
        fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except FileExistsError:  # made meanwhile (or a dangling link): read it, with all the checks
        return load_or_create_token(f.parent)
    with os.fdopen(fd, "w") as fh:
        os.fchmod(fh.fileno(), 0o600)  # whatever the umask
        fh.write(tok + "\n")
    return tok


def token_ok(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode("utf-8", "replace"), token.encode())


class ServerLock:
    """An exclusive ``flock`` on ``RUNS_DIR/service.lock`` (holding the server's pid) for its life."""

    def __init__(self, runs_dir: Path):
        self.path = Path(runs_dir) / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> "ServerLock":
        from .files import Damaged, open_private

        try:
            fd = open_private(self.path, os.O_RDWR | os.O_CREAT)
        except (OSError, Damaged) as e:
            why = e.strerror if isinstance(e, OSError) else str(e)
            raise UserError(f"server lock {str(self.path)!r} cannot be opened ({why}); accepted: a regular "
                            "file (delete what is there)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"another `metaprune serve` (pid {holder}) serves {str(self.path.parent)!r}; one server "
                            "per runs directory: stop it first or use it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass
            os.close(fd)  # closing drops the flock


def host_name(host_header: str | None) -> str | None:
    """``"127.0.0.1:8000"`` -> ``"127.0.0.1"``; ``"[::1]:8000"`` -> ``"::1"``."""
    return host_port(host_header, "http")[0] if host_header else None


def host_port(host_header: str | None, scheme: str = "http") -> tuple[str | None, int | None]:
    if not host_header:
        return None, None
    try:
        u = urlsplit(f"//{host_header}")
        return u.hostname, u.port or _DEFAULT_PORT.get(scheme)
    except ValueError:
        return None, None


_DEFAULT_PORT = {"http": 80, "https": 443}


def parse_origin(origin: str | None) -> tuple[str, str, int] | None:
    """``"http://127.0.0.1:8000"`` -> ``("http", "127.0.0.1", 8000)``; ``None`` for ``null`` or junk."""
    if not origin or origin == "null":
        return None
    try:
        u = urlsplit(origin)
        port = u.port
    except ValueError:
        return None
    if u.scheme not in _DEFAULT_PORT or not u.hostname or u.path not in ("", "/") or u.query or u.username:
        return None
    return u.scheme, u.hostname.lower(), port or _DEFAULT_PORT[u.scheme]


def own_origins(names, port: int) -> set[tuple[str, str, int]]:
    """This server's origins: ``http://NAME:PORT`` for each name it answers to."""
    return {("http", n.lower(), port) for n in names}


def cross_site_reason(method: str, headers, origins: set | None, host_header: str | None) -> str | None:
    """Why a state-changing request comes from another page (``None``: it does not).

    ``origins`` are this server's exact origins; ``None`` (a wildcard bind) compares the Origin with
    the Host the request was sent to."""
    if method in SAFE_METHODS:
        return None
    site = (headers.get("sec-fetch-site") or "").lower()
    if site and site not in ("same-origin", "none"):
        return f"Sec-Fetch-Site {site!r}"
    raw = headers.get("origin")
    if raw is None:
        return None  # not sent by a browser page (curl, scripts): the header token is the guard
    o = parse_origin(raw)
    if o is None:
        return f"Origin {raw[:100]!r}"
    if origins is not None:
        return None if o in origins else f"Origin {raw[:100]!r}"
    h, p = host_port(host_header, o[0])
    return None if (h and h.lower() == o[1] and p == o[2]) else f"Origin {raw[:100]!r}"


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
