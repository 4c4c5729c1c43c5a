"""Secure-by-default plumbing: the token, Host/Origin checks, and the request-size limit.

- A random token lives in ``RUNS_DIR/service-token`` (mode 0600, created on first start). Every
  route needs it: ``Authorization: Bearer TOKEN``, ``X-Metaprune-Token: TOKEN``, or the cookie that
  ``GET /?token=TOKEN`` sets for the browser (HttpOnly, SameSite=Strict) and its event stream.
- ``Host`` must name this server (loopback names, or the ``--host`` given with ``--allow-remote``):
  a DNS-rebinding page cannot reach it. State-changing requests authenticated by the cookie must also
  carry a matching ``Origin`` (no cross-site request forgery).
- Bodies above ``MAX_BODY_BYTES`` get 413.
"""
from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit

TOKEN_FILE = "service-token"
COOKIE = "metaprune_token"
MAX_BODY_BYTES = 64 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def load_or_create_token(runs_dir: Path) -> str:
    """The runs directory's token; created with mode 0600 when missing (or empty)."""
    f = runs_dir / TOKEN_FILE
    try:
        tok = f.read_text().strip()
        if tok:
            os.chmod(f, 0o600)
            return tok
    except FileNotFoundError:
        pass
    tok = secrets.token_urlsafe(32)
    fd = os.open(f, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(tok + "\n")
    os.chmod(f, 0o600)
    return tok


def token_ok(given: str | None, token: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


def host_name(host_header: str | None) -> str | None:
    """``"127.0.0.1:8000"`` -> ``"127.0.0.1"``; ``"[::1]:8000"`` -> ``"::1"``."""
    if not host_header:
        return None
    try:
        return urlsplit(f"//{host_header}").hostname
    except ValueError:
        return None


def origin_host(origin: str | None) -> str | None:
    if not origin or origin == "null":
        return None
    try:
        return urlsplit(origin).hostname
    except ValueError:
        return None


def is_loopback(host: str) -> bool:
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
