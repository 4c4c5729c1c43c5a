"""``metaprune serve`` against someone who can write to the runs directory or serve a page on another
local port (issue 27): cross-origin requests, GET routes with side effects, markup and junk in run
files, the token file, oversized answers, FIFOs and links, two servers on one runs directory, many
writers on one run, stale progress, and out-of-range numbers.

Every refused request gets a 4xx JSON ``{"error": ONE LINE, "field": NAME}`` without a traceback,
and leaves the runs directory byte-identical (file types and link targets included). No training
runs here: the runs are written by ``service_helpers.make_run`` and jobs are queued, never started.
"""
from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import quote

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from service_helpers import XSS, make_run, plant_hostile_run  # noqa: E402

TOKEN = "security-token-" + "x" * 40
AUTH = {"Authorization": f"Bearer {TOKEN}"}
OWN = "http://testserver:8000"  # this app's origin: Host name testserver, the port it was made with
SERVICE_FILES = {"service.sqlite3", "service.sqlite3-wal", "service.sqlite3-shm", "service-token", ".service-logs",
                 "service.lock"}


def runs_state(runs: Path) -> dict:
    """Every path under ``runs`` (but the service's own files) with its type and bytes or link
    target; FIFOs are never opened."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(runs):
        rel = os.path.relpath(dirpath, runs)
        if rel == ".":
            dirnames[:] = [d for d in dirnames if d not in SERVICE_FILES]
            filenames = [f for f in filenames if f not in SERVICE_FILES]
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                out[str(p.relative_to(runs))] = ("file", p.read_bytes())
            elif stat.S_ISLNK(st.st_mode):
                out[str(p.relative_to(runs))] = ("link", os.readlink(p))
            else:
                out[str(p.relative_to(runs))] = (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode))
    return out


@pytest.fixture(scope="module")
def svc(tmp_path_factory):
    """An app over a runs directory of hand-written runs (start_jobs=False: jobs stay queued)."""
    from metaprune.service.api import create_app

    runs = tmp_path_factory.mktemp("security") / "runs"
    runs.mkdir()
    make_run(runs, "trained", search=6)
    make_run(runs, "fresh")
    make_run(runs, "busy", search=6)
    fifo = make_run(runs, "fifo")
    (fifo / "status.json").unlink()
    os.mkfifo(fifo / "status.json")
    linked = make_run(runs, "linked")
    outside = runs.parent / "outside.json"
    outside.write_text(json.dumps({"state": "done", "step": 31337, "total_steps": 31337}))
    (linked / "status.json").unlink()
    (linked / "status.json").symlink_to(outside)
    bomb = make_run(runs, "bomb")
    levels = ["a: &a [x, x, x, x, x, x, x, x, x]"] + [f"{c}: &{c} [{', '.join(['*' + p] * 9)}]"
                                                   for p, c in zip("abcdefgh", "bcdefghi")]
    (bomb / "config.yaml").write_text("\n".join(levels) + "\n")
    nan = make_run(runs, "nan")
    with open(nan / "metrics.jsonl", "a") as f:
        f.write('{"step": 240, "loss": NaN, "train_top1": Infinity}\n')
    prog = make_run(runs, "progress")
    (prog / "status.json").write_text(json.dumps({"state": "running", "step": 0, "total_steps": 100}))
    (prog / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0}) + "\n" for s in (5, 10, 40)))
    for name in ("stale", "orphan", "cli"):  # status.json "running": job cancelled (below), writer dead, alive
        make_run(runs, name)
        (runs / name / "status.json").write_text(json.dumps({"state": "running", "step": 0, "total_steps": 100}))
    gone = subprocess.Popen(["true"])
    gone.wait()
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)", "metaprune", "train-pruningnet"])
    for name, pid in (("orphan", gone.pid), ("cli", writer.pid)):  # what metaprune.store.runlock leaves while held
        (runs / name / "run.lock").write_text(json.dumps({"job": "train-pruningnet", "pid": pid,
                                                          "host": socket.gethostname()}))
    plant_hostile_run(runs)
    app = create_app(runs, token=TOKEN, extra_hosts=("testserver",), start_jobs=False, port=8000)
    with TestClient(app) as c:
        r = c.post("/api/runs/busy/searches", headers=AUTH, json={"config": "smoke", "strategy": "pareto",
                                                                   "overwrite": True})
        assert r.status_code == 202, r.json()
        db = app.state.db
        j = db.create_job("meta-train", "stale", {}, ["train-pruningnet"])
        db.update_job(j["id"], state="cancelled", ended=time.time() + 1)
        yield c, app, runs
    writer.kill()
    writer.wait()


def _alias_bomb(levels: int = 9) -> str:
    parts = ["[&a [1,1,1,1,1,1,1,1,1]"] + [f"&{c} [{','.join(['*' + p] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi")]
    return ",".join(parts[:levels]) + "]"


def _meta(overrides: dict) -> dict:
    """A meta-training request with ``overrides``."""
    return {"name": "n", "config": "smoke", "overrides": overrides}


def _h(origin: str, **kwargs) -> dict:
    """Request arguments with the token and an ``Origin``."""
    return {**kwargs, "headers": {**AUTH, "Origin": origin}}


def _raw(body: bytes) -> dict:
    """A raw JSON body (NaN and Infinity, which ``json=`` would not send)."""
    return {"content": body, "headers": {**AUTH, "Content-Type": "application/json"}}


SEARCH = {"config": "smoke", "strategy": "pareto", "overwrite": True}
# (case, method, path, request kwargs, status, field): each is refused with one JSON line naming the field
CASES = [
    # 1. cross-origin: another local port, scheme or host; Sec-Fetch-Site; the old cookie
    ("csrf-other-port", "POST", "/api/runs/trained/searches", _h("http://testserver:9999", json=SEARCH), 403, "Origin"),
    ("csrf-loopback-port", "POST", "/api/jobs/1/cancel", _h("http://127.0.0.1:9999"), 403, "Origin"),
    ("csrf-default-port", "POST", "/api/jobs/1/cancel", _h("http://127.0.0.1"), 403, "Origin"),
    ("csrf-https-scheme", "POST", "/api/jobs/1/cancel", _h("https://127.0.0.1:8000"), 403, "Origin"),
    ("csrf-null-origin", "POST", "/api/jobs/1/cancel", _h("null"), 403, "Origin"),
    ("csrf-foreign-host", "POST", "/api/runs", _h("http://evil.example:8000", json={"name": "z", "config": "smoke"}),
     403, "Origin"),
    ("csrf-same-site", "POST", "/api/jobs/1/cancel", {"headers": {**AUTH, "Sec-Fetch-Site": "same-site"}}, 403,
     "Origin"),
    ("csrf-cross-site", "POST", "/api/runs/trained/export",
     {"json": {"candidate": 0}, "headers": {**AUTH, "Sec-Fetch-Site": "cross-site"}}, 403, "Origin"),
    ("csrf-cookie-post", "POST", "/api/jobs/1/cancel",
     {"cookies": {"metaprune_token": TOKEN}, "headers": {"Origin": OWN}}, 401, "token"),
    ("csrf-cookie-get", "GET", "/api/runs", {"cookies": {"metaprune_token": TOKEN}, "headers": {}}, 401, "token"),
    # 2. GET has no side effects; exports need the run idle and a free slot
    ("get-export", "GET", "/api/runs/trained/export?candidate=0&format=onnx", {}, 405, None),
    ("get-baselines", "GET", "/api/runs/trained/baselines?count=3", {}, 405, None),
    ("busy-export", "POST", "/api/runs/busy/export", {"json": {"candidate": 0}}, 409, "name"),
    ("busy-baselines", "POST", "/api/runs/busy/baselines", {"json": {"count": 3}}, 409, "name"),
    ("busy-training", "POST", "/api/runs/busy/trainings", {"json": {"candidate": 0}}, 409, "name"),
    ("busy-search", "POST", "/api/runs/busy/searches", {"json": SEARCH}, 409, "name"),
    # 5. denial of service: bounded options, queries, bodies and lists
    ("dos-alias-bomb", "GET", "/api/spaces/mobilenet_v2?ratios=" + quote(_alias_bomb()), {}, 422, "ratios"),
    ("dos-alias-units", "GET", "/api/spaces/resnet50?fixed_units=" + quote(_alias_bomb()), {}, 422, "fixed_units"),
    ("dos-many-ratios", "GET", "/api/spaces/resnet50?ratios=[" + ",".join(["0.5"] * 300) + "]", {}, 422, "ratios"),
    ("dos-ratio-range", "GET", "/api/spaces/resnet50?ratios=0.0001:1:0.0001", {}, 422, "ratios"),
    ("dos-input-size", "GET", "/api/spaces/resnet50?input_size=8192", {}, 422, "input_size"),
    ("dos-width", "GET", "/api/spaces/resnet50?width_mult=8", {}, 422, "width_mult"),
    ("dos-classes", "GET", "/api/spaces/resnet50?num_classes=1000000", {}, 422, "num_classes"),
    ("dos-option-twice", "GET", "/api/spaces/resnet50?input_size=32&input_size=64", {}, 422, "input_size"),
    ("dos-unknown-option", "GET", "/api/spaces/resnet50?depth=1000", {}, 422, "depth"),
    ("dos-long-query", "GET", "/api/spaces/resnet50?variant=" + "a" * 5000, {}, 414, "query"),
    ("dos-job-limit", "GET", "/api/jobs?limit=100000", {}, 422, "limit"),
    ("dos-many-overrides", "POST", "/api/runs", {"json": _meta({f"k{i}": 1 for i in range(65)})}, 422, "overrides"),
    ("dos-long-list", "POST", "/api/runs", {"json": _meta({"space.options.ratios": [0.5] * 300})}, 422,
     "overrides.space.options.ratios"),
    ("dos-space-input", "POST", "/api/runs", {"json": _meta({"space.options.input_size": 100000})}, 422,
     "overrides.space.options.input_size"),
    ("dos-population", "POST", "/api/runs/trained/searches", {"json": {**SEARCH, "overrides": {"population": 10**7}}},
     422, "overrides.population"),
    ("dos-big-body", "POST", "/api/runs", _raw(b"{" + b" " * 70_000 + b"}"), 413, "body"),
    # 9. numbers: finite, in documented ranges
    ("num-epochs-int", "POST", "/api/runs", {"json": _meta({"train.epochs": 10**26})}, 422, "overrides.train.epochs"),
    ("num-epochs-float", "POST", "/api/runs", {"json": _meta({"train.epochs": 1e26})}, 422, "overrides.train.epochs"),
    ("num-seed-huge", "POST", "/api/runs", {"json": _meta({"seed": 2**70})}, 422, "overrides.seed"),
    ("num-seed-negative", "POST", "/api/runs/trained/searches", {"json": {**SEARCH, "overrides": {"seed": -1}}}, 422,
     "overrides.seed"),
    ("num-nan-override", "POST", "/api/runs", _raw(b'{"name": "n", "config": "smoke", "overrides": {"train.lr": NaN}}'),
     422, "overrides.train.lr"),
    ("num-inf-latency", "POST", "/api/runs/trained/searches", _raw(b'{"config": "smoke", "max_latency_ms": Infinity}'),
     422, "max_latency_ms"),
    ("num-seeds-huge", "POST", "/api/runs/trained/trainings", {"json": {"candidate": 0, "seeds": 2**70}}, 422, "seeds"),
    ("num-seeds-bool", "POST", "/api/runs/trained/trainings", {"json": {"candidate": 0, "seeds": True}}, 422, "seeds"),
    ("num-candidate-negative", "POST", "/api/runs/trained/export", {"json": {"candidate": -1}}, 422, "candidate"),
    ("num-candidate-huge", "POST", "/api/runs/trained/export", {"json": {"candidate": 2**70}}, 422, "candidate"),
    ("num-macs-huge", "POST", "/api/runs/trained/export", {"json": {"max_macs": 10**30}}, 422, "max_macs"),
    ("num-job-id", "GET", f"/api/jobs/{2**70}", {}, 422, "job_id"),
    ("num-cancel-id", "POST", f"/api/jobs/{2**70}/cancel", {}, 422, "job_id"),
    ("num-events-after", "GET", f"/api/events?after={2**70}", {}, 422, "after"),
    ("num-events-job", "GET", "/api/events?job=-5", {}, 422, "job"),
    ("num-baselines", "POST", "/api/runs/trained/baselines", {"json": {"count": 10**6}}, 422, "count"),
    # damaged runs: refused, never hanging or following a link
    ("damaged-space-export", "POST", "/api/runs/hostile/export", {"json": {"candidate": 0}}, 409, "run"),
]


@pytest.mark.parametrize("case,method,path,kwargs,status,field", CASES, ids=[c[0] for c in CASES])
def test_refused_with_one_json_line_naming_the_field_and_nothing_changes(svc, case, method, path, kwargs, status,
                                                                         field):
    client, app, runs = svc
    before, jobs_before = runs_state(runs), app.state.db.jobs(limit=1000)
    kwargs = dict(kwargs)
    kwargs.setdefault("headers", AUTH)
    cookies = kwargs.pop("cookies", None)
    if cookies:
        client.cookies.update(cookies)
    try:
        r = client.request(method, path, **kwargs)
    finally:
        client.cookies.clear()
    doc = r.json()
    assert r.status_code == status, (case, doc)
    assert set(doc) == {"error", "field"} and doc["field"] == field, (case, doc)
    assert doc["error"] and "\n" not in doc["error"] and "Traceback" not in doc["error"], doc
    assert len(r.content) < 1000, (case, len(r.content))  # an error never echoes a whole input
    assert "script-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert runs_state(runs) == before, case
    assert app.state.db.jobs(limit=1000) == jobs_before, case


def test_jobs_slots_are_shared_by_export_processes(svc):
    """An ONNX export or baseline scoring starts a process: it takes one of the --jobs slots, and is
    refused (409, field jobs) while they are all busy."""
    client, app, runs = svc
    before = runs_state(runs)
    with app.state.jobs.reserve("someone-else", slot=True):
        for path, body in (("/api/runs/trained/export", {"candidate": 0, "format": "onnx"}),
                           ("/api/runs/trained/baselines", {"count": 3})):
            r = client.post(path, headers=AUTH, json=body)
            assert r.status_code == 409 and r.json()["field"] == "jobs" and "slot" in r.json()["error"], r.json()
    assert runs_state(runs) == before


def test_get_routes_write_nothing_and_start_nothing(svc):
    """The front is a pure read: baselines are shown only once POST .../baselines scored them; no
    plot, no export file, no process (a process would take seconds)."""
    client, _, runs = svc
    before = runs_state(runs)
    t0 = time.monotonic()
    for path in ("/api/runs/trained/front?baselines=3", "/api/runs/trained", "/api/runs", "/api/runs/trained/report",
                 "/api/jobs", "/api/events", "/api/spaces/mobilenet_v2?input_size=32"):
        r = client.get(path, headers=AUTH)
        assert r.status_code in (200, 404), (path, r.json())
    assert client.get("/api/runs/trained/front", headers=AUTH).json()["baselines"] == []
    assert time.monotonic() - t0 < 10 and runs_state(runs) == before


def test_ten_parallel_searches_on_one_run_one_is_accepted(svc):
    """One writer per run: ten racing search requests, one 202, nine 409 naming `name`; five racing
    meta-trainings of one new name, one 202."""
    client, app, runs = svc

    def race(n, method, path, body):
        out, barrier = [], threading.Barrier(n)

        def one():
            barrier.wait()
            r = client.request(method, path, headers=AUTH, json=body)
            out.append((r.status_code, r.json()))

        threads = [threading.Thread(target=one) for _ in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        return out

    got = race(10, "POST", "/api/runs/fresh/searches", {"config": "smoke", "strategy": "pareto"})
    assert sorted(s for s, _ in got) == [202] + [409] * 9, got
    assert all(d["field"] == "name" and "busy" in d["error"] for s, d in got if s == 409), got
    assert len(app.state.db.jobs(run="fresh", states=("queued", "running"))) == 1
    got = race(5, "POST", "/api/runs", {"name": "racing", "config": "smoke"})
    assert sorted(s for s, _ in got) == [202] + [409] * 4, got
    assert all(d["field"] == "name" for s, d in got if s == 409)
    assert len(app.state.db.jobs(run="racing")) == 1


def test_damaged_runs_are_listed_with_a_reason_without_blocking(svc):
    """A FIFO status.json, a status.json linked out of the tree, a YAML alias bomb and NaN in the
    metrics: /api/runs answers at once, shows each as damaged with one line, and lists the others."""
    client, _, runs = svc
    out = {}
    t = threading.Thread(target=lambda: out.update(r=client.get("/api/runs", headers=AUTH)), daemon=True)
    t.start()
    t.join(20)
    assert "r" in out, "GET /api/runs blocked on a FIFO"
    listed = {r["name"]: r for r in out["r"].json()["runs"]}
    assert {"trained", "fresh", "fifo", "linked", "bomb", "nan", "hostile"} <= set(listed)
    assert "FIFO" in listed["fifo"]["damaged"] and "\n" not in listed["fifo"]["damaged"]
    assert "symbolic link" in listed["linked"]["damaged"] and listed["linked"]["meta_training"].get("step") != 31337
    assert listed["trained"]["damaged"] is None and listed["trained"]["meta_training"]["step"] == 234
    bomb = client.get("/api/runs/bomb", headers=AUTH).json()
    assert bomb["config"] is None and "aliases" in bomb["damaged"]
    nan = client.get("/api/runs/nan", headers=AUTH)
    doc = json.loads(nan.content, parse_constant=lambda c: pytest.fail(f"{c} in JSON"))  # strict JSON
    assert doc["meta_training"]["step"] == 234 and all(isinstance(p["loss"], float) for p in doc["curve"])


def test_values_from_run_files_are_type_checked(svc):
    """Markup where a number belongs is dropped (step, loss, generation, candidate ids); strings stay
    strings for the page to show as text; damaged search records are counted, not served."""
    client, _, _ = svc
    run = client.get("/api/runs/hostile", headers=AUTH).json()
    m = run["meta_training"]
    # status.json's markup step and wall_s are dropped; the step is metrics.jsonl's (capped at total_steps), whose
    # last loss is markup: no loss
    assert m["state"] == "damaged" and m["step"] == 10 and "wall_s" not in m and "loss" not in m, m
    assert run["space"] == XSS[:80] and run["search"]["strategy"] is None
    assert run["search"].get("generation") is None and run["search"].get("evaluated") is None
    assert all(isinstance(p["loss"], float) for p in run["curve"])
    front = client.get("/api/runs/hostile/front", headers=AUTH).json()
    assert front["damaged_records"] == 6 and len(front["candidates"]) == 4
    assert all(isinstance(c["id"], int) and all(isinstance(v, int) for v in c["channels"].values())
               for c in front["candidates"] + front["front"])
    rows = client.get("/api/runs/hostile/report", headers=AUTH).json()["results"]
    assert rows[0]["name"] == XSS and rows[0]["macs"] == 123


def test_progress_carries_steps_and_stopped_jobs_do_not_show_running(svc):
    """The step comes from metrics.jsonl while status.json still says step 0; a run whose
    meta-training job was cancelled shows cancelled, one whose writer (named by run.lock) is gone
    shows stopped; only a live writer keeps it running."""
    client, _, _ = svc
    m = client.get("/api/runs/progress", headers=AUTH).json()["meta_training"]
    assert m["step"] == 40 and m["total_steps"] == 100 and m["fraction"] == 0.4
    m = client.get("/api/runs/stale", headers=AUTH).json()["meta_training"]
    assert m["state"] == "cancelled" and "resume" in m["note"]
    m = client.get("/api/runs/orphan", headers=AUTH).json()["meta_training"]  # its writer's pid is gone
    assert m["state"] == "stopped" and "resume" in m["note"]
    m = client.get("/api/runs/cli", headers=AUTH).json()["meta_training"]  # a live writer holds the run
    assert m["state"] == "running" and "note" not in m


def test_a_restarted_server_marks_jobs_whose_process_is_gone(tmp_path):
    """A job the previous server left `running` (its process gone) shows `interrupted` at start."""
    from metaprune.service.api import create_app
    from metaprune.service.db import Database

    runs = tmp_path / "runs"
    make_run(runs, "r")
    db = Database(runs / "service.sqlite3")
    job = db.create_job("search", "r", {}, ["search"])
    gone = subprocess.Popen(["true"])
    gone.wait()
    db.update_job(job["id"], state="running", pid=gone.pid, started=time.time())
    db.close()
    with TestClient(create_app(runs, token=TOKEN, extra_hosts=("testserver",), poll_s=0.2)) as c:
        got = c.get(f"/api/jobs/{job['id']}", headers=AUTH).json()
    assert got["state"] == "interrupted" and "resume" in got["error"]


TOKEN_FILES = [
    # (case, how the file is made, what the one-line error says)
    ("symlink", lambda f, out: f.symlink_to(out), "symbolic link"),
    ("group-readable", lambda f, out: (f.write_text("a" * 43 + "\n"), f.chmod(0o640)), "chmod 600"),
    ("world-writable", lambda f, out: (f.write_text("a" * 43 + "\n"), f.chmod(0o602)), "mode 0602"),
    ("short", lambda f, out: (f.write_text("hunter2\n"), f.chmod(0o600)), "43 URL-safe"),
    ("not-urlsafe", lambda f, out: (f.write_text("a b!" * 12 + "\n"), f.chmod(0o600)), "43 URL-safe"),
    ("empty", lambda f, out: (f.write_text(""), f.chmod(0o600)), "43 URL-safe"),
    ("fifo", lambda f, out: os.mkfifo(f, 0o600), "not a regular file"),
    ("directory", lambda f, out: f.mkdir(mode=0o700), "not a regular file"),
]


@pytest.mark.parametrize("case,make,says", TOKEN_FILES, ids=[t[0] for t in TOKEN_FILES])
def test_token_file_refused_in_one_line(cli, tmp_path, case, make, says):
    """`serve` exits 2 with one line for a token file that is a link, non-regular, open to others or
    short; the file (or a link's target) is left exactly as it was: never chmodded or rewritten."""
    from metaprune.service.security import ServerLock

    runs = tmp_path / "runs"
    runs.mkdir()
    outside = tmp_path / "outside-secret"
    outside.write_text("b" * 50 + "\n")
    outside.chmod(0o644)
    make(runs / "service-token", outside)
    lock = ServerLock(runs).acquire()  # held: a regression could not start a server here
    try:
        before = runs_state(tmp_path)
        code, out, err = cli("serve", "--runs-dir", runs, "--port", "1")
        after = runs_state(tmp_path)
    finally:
        lock.release()
    assert code == 2 and err.count("\n") == 1 and "token file" in err and says in err, err
    assert "Traceback" not in err and "pid" not in err  # refused for the token, before the lock
    assert after == before and stat.S_IMODE(outside.stat().st_mode) == 0o644


def test_a_new_token_file_is_private_and_long(tmp_path):
    from metaprune.service.security import load_or_create_token

    tok = load_or_create_token(tmp_path)
    f = tmp_path / "service-token"
    assert len(tok) >= 43 and stat.S_IMODE(f.stat().st_mode) == 0o600 and f.read_text().strip() == tok
    assert load_or_create_token(tmp_path) == tok


def test_one_server_per_runs_directory(cli, svc):
    """A second server on a runs directory exits 2 naming the first one's pid, before touching its
    jobs; another app over it is refused the same way."""
    from metaprune.service.api import create_app
    from pruningnet.errors import UserError

    _, app, runs = svc
    (runs / "service-token").write_text("t" * 43 + "\n")
    (runs / "service-token").chmod(0o600)
    jobs_before = app.state.db.jobs(limit=1000)
    try:
        code, out, err = cli("serve", "--runs-dir", runs, "--port", "1")
        assert code == 2 and err.count("\n") == 1 and f"pid {os.getpid()}" in err, err
        with pytest.raises(UserError, match=f"pid {os.getpid()}"):
            create_app(runs, token=TOKEN)
    finally:
        (runs / "service-token").unlink()
    assert app.state.db.jobs(limit=1000) == jobs_before
