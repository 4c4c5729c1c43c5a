"""A real ``metaprune serve`` process for tests: start it, talk to it, stop it (or kill -9 it)."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``python -m metaprune serve`` on a free loopback port over ``runs_dir``."""

    def __init__(self, runs_dir: Path, port: int | None = None):
        self.runs_dir = Path(runs_dir)
        self.port = port or free_port()
        env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0")
        self.log = open(self.runs_dir.parent / f"serve-{self.port}-{time.time():.0f}.log", "ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "metaprune", "serve", "--runs-dir", str(self.runs_dir),
                                      "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 60
        while True:
            assert self.proc.poll() is None, f"server exited: {self.read_log()}"
            tok = self.runs_dir / "service-token"
            if tok.is_file() and tok.read_text().strip():
                self.token = tok.read_text().strip()
                try:
                    if self.request("GET", "/api/configs")[0] == 200:
                        break
                except (urllib.error.URLError, ConnectionError):
                    pass
            assert time.monotonic() < deadline, f"server did not come up: {self.read_log()}"
            time.sleep(0.2)

    def read_log(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text(errors="replace")[-3000:]

    def request(self, method: str, path: str, body: dict | None = None, token: str | None = "default"):
        headers = {"Content-Type": "application/json"}
        tok = self.token if token == "default" else token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        data = json.dumps(body).encode() if body is not None else (b"" if method == "POST" else None)
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                raw = r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            raw, status = e.read(), e.code
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw

    def wait_job(self, job_id: int, until=("done", "failed", "cancelled", "interrupted"), timeout: float = 240,
                 predicate=None) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            status, job = self.request("GET", f"/api/jobs/{job_id}")
            assert status == 200, job
            if job["state"] in until or (predicate is not None and predicate(job)):
                return job
            assert time.monotonic() < deadline, f"job {job_id} still {job['state']}: {job}"
            time.sleep(0.3)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill9()
        self.log.close()

    def kill9(self) -> None:
        """kill -9 the server alone (its jobs run in their own sessions and survive it)."""
        self.proc.kill()
        self.proc.wait()


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill 0; it is gone for our purposes
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def runs_with_smoke(smoke_run: Path, parent: Path) -> Path:
    """``parent/runs`` holding a copy of the session's smoke run as run ``smoke`` (no search, no
    training, no exports), the way a team's runs directory looks before the service is used."""
    import shutil

    runs = Path(parent) / "runs"
    runs.mkdir(parents=True)
    shutil.copytree(smoke_run, runs / "smoke", ignore=shutil.ignore_patterns("search", "train", "exports"))
    return runs
