"""``metaprune serve``: the HTTP API and web page over a runs directory."""
from __future__ import annotations

from pathlib import Path

import click

from pruningnet.errors import UserError

from .group import cli


@cli.command()
@click.option("--runs-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="The runs to serve; the service's database, logs and token live here too.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to bind; a non-loopback one needs --allow-remote.")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@click.option("--jobs", "max_jobs", type=click.IntRange(1, 64),
              help="Jobs run at once [default: 1 on CPU, one per GPU], at most one per core; each gets "
                   "cores / jobs torch threads.")
@click.option("--allow-remote", is_flag=True,
              help="Allow binding a non-loopback --host (the token is then the only guard: use TLS in front).")
def serve(runs_dir, host, port, max_jobs, allow_remote) -> None:
    """Serve RUNS_DIR over HTTP: launch meta-training, searches (MACs budgets, the papers' FLOPs) and
    scratch training as jobs, watch them, inspect Pareto fronts and export picks. Every API route needs
    the token printed at start (kept in RUNS_DIR/service-token, mode 0600, at least 32 random bytes;
    a link, a non-regular file or one others may read is refused). One server per runs directory
    (RUNS_DIR/service.lock): a second one exits naming the first one's pid."""
    try:
        import uvicorn

        from ..service.api import create_app
        from ..service.security import is_loopback, load_or_create_token
    except ModuleNotFoundError as e:
        raise UserError(f"`metaprune serve` needs {e.name}; install metaprune with its dependencies "
                        "(pip install metaprune)") from None
    if not is_loopback(host) and not allow_remote:
        raise UserError(f"--host {host!r} is not a loopback address; accepted: 127.0.0.1, ::1, localhost, or "
                        "any address together with --allow-remote")
    runs = Path(runs_dir)
    if runs.exists() and not runs.is_dir():
        raise UserError(f"--runs-dir {runs_dir!r} is not a directory")
    runs.mkdir(parents=True, exist_ok=True)
    token = load_or_create_token(runs)  # UserError (exit 2, one line) for a link, open mode, short token
    gpus = 0
    try:
        import torch

        gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install means CPU
        gpus = 0
    jobs = max_jobs or max(1, gpus)
    wildcard = host in ("0.0.0.0", "::")  # reached under names we cannot know: the token guards alone
    # holds RUNS_DIR/service.lock until the server stops; a second server exits here, naming the first
    app = create_app(runs, token=token, max_jobs=jobs, host=host, port=port, gpus=gpus,
                     check_host=not (allow_remote and wildcard))
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"metaprune serve: {runs.resolve()} on http://{shown}:{port}/ ({app.state.jobs.max_jobs} job(s) at a time, "
               f"{app.state.jobs.threads} torch thread(s) each)", err=True)
    click.echo(f"open: http://{shown}:{port}/?token={token}", err=True)
    click.echo(f"API:  curl -H 'Authorization: Bearer {token}' http://{shown}:{port}/api/runs", err=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False,
                limit_concurrency=256, timeout_graceful_shutdown=5)
