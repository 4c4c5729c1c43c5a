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


SMOKE_SPACE = {"space": "mobilenet_v2", "options": {"small_input": True, "width_mult": 0.5, "round_to": 1,
                                                    "ratios": "0.5:1.0:0.125", "in_channels": 1, "num_classes": 10,
                                                    "input_size": 28}}


def make_run(runs: Path, name: str, *, pruningnet: bool = True, search: int = 0) -> Path:
    """A run directory as meta-training leaves it, without training: the shipped smoke config, the
    smoke space, ``status.json`` done, a placeholder ``pruningnet.pt`` (the service only checks that
    it is a file: jobs on it are refused or never started in these tests) and, with ``search``, a
    finished search of that many candidates whose costs come from the cost model."""
    from metaprune.config import CONFIG_ROOT

    run = Path(runs) / name
    run.mkdir(parents=True)
    (run / "config.yaml").write_text((CONFIG_ROOT / "smoke.yaml").read_text())
    (run / "space.json").write_text(json.dumps(SMOKE_SPACE))
    (run / "status.json").write_text(json.dumps({"state": "done", "step": 234, "total_steps": 234}))
    (run / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "epoch": 0, "loss": 2.3 - s / 200,
                                                           "train_top1": s / 300, "lr": 0.1}) + "\n"
                                               for s in range(5, 235, 5)))
    if pruningnet:
        (run / "pruningnet.pt").write_bytes(b"placeholder, never loaded")
    if search:
        plant_search(run, search)
    return run


def plant_search(run: Path, n: int, extra: list | None = None) -> list[dict]:
    """Write ``search/{front,candidates,logbook}.json`` of ``n`` candidates (plus ``extra`` raw records)."""
    from pruningnet import get_space
    from pruningnet.cost import cost_model

    sp = get_space(SMOKE_SPACE["space"], **SMOKE_SPACE["options"])
    cm = cost_model(sp)
    cands = []
    for i in range(n):
        ch = {u.name: u.choices[(i + j) % len(u.choices)] for j, u in enumerate(sp.units)}
        cands.append({"id": i, "generation": 0, "channels": ch, "macs": int(cm.macs(ch)[0]),
                      "params": int(cm.params(ch)[0]), "top1": 0.5 + i / (4 * n)})
    head = {"strategy": "pareto", "budgets": {}, "seed": 0, "generation": 0, "generations": 1, "finished": True}
    d = run / "search"
    d.mkdir(exist_ok=True)
    front = sorted(cands, key=lambda c: c["macs"])[:3]
    (d / "candidates.json").write_text(json.dumps({**head, "candidates": cands + (extra or [])}))
    (d / "front.json").write_text(json.dumps({**head, "objectives": ["macs"], "front": front + (extra or [])}))
    (d / "logbook.json").write_text(json.dumps({**head, "logbook": [{"gen": 0, "evaluated": n, "best_score": 0.7,
                                                                    "best_id": n - 1, "front_size": 3}]}))
    return cands


#: markup planted in run files; if any of it were parsed as HTML, an element with class "pwn" would
#: appear in the page, or window.__pwned would be set
XSS = '<b class="pwn">x</b><img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>'


def plant_hostile_run(runs: Path, name: str = "hostile") -> Path:
    """A run whose files carry markup wherever a value is read: space name and options, status.json
    state and step, metrics loss, search strategy, candidate id and channel names, result strings."""
    run = make_run(runs, name, search=4)
    (run / "space.json").write_text(json.dumps({"space": XSS, "options": {"note": XSS}}))
    (run / "status.json").write_text(json.dumps({"state": XSS, "step": XSS, "total_steps": 10, "wall_s": XSS}))
    with open(run / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 240, "loss": XSS, "train_top1": XSS}) + "\n")
    bad = [{"id": XSS, "channels": {"stem": 8}, "macs": 1, "params": 1, "top1": 0.9},
           {"id": 99, "channels": {XSS: 8}, "macs": 1, "params": 1, "top1": 0.9},
           {"id": 98, "channels": {"stem": 8}, "macs": XSS, "params": 1, "top1": 0.9}]
    plant_search(run, 4, extra=bad)
    book = json.loads((run / "search" / "logbook.json").read_text())
    book.update(strategy=XSS, logbook=[{"gen": XSS, "evaluated": XSS, "best_score": XSS}])
    (run / "search" / "logbook.json").write_text(json.dumps(book))
    (run / "train").mkdir()
    (run / "train" / "results.json").write_text(json.dumps({"results": [
        {"name": XSS, "kind": "searched", "macs": 123, "test_top1": 0.5, "proxy_top1": 0.4, "note": XSS}]}))
    return run


def wait_until(page, expression: str, timeout_s: float = 20.0) -> None:
    """Poll ``page.evaluate(expression)`` until it is truthy. (Playwright's ``wait_for_function``
    evaluates a string with ``eval``, which the page's Content-Security-Policy refuses, as it should.)"""
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"timed out after {timeout_s} s waiting for {expression}"
        time.sleep(0.1)
