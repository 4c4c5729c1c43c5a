"""``metaprune serve``: the API with FastAPI's TestClient and with a real server process, real
subprocess jobs on a smoke run, SQLite state across a kill -9 of the server."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from service_helpers import Server, pid_alive  # noqa: E402

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def runs_dir(smoke_run, tmp_path_factory):
    d = tmp_path_factory.mktemp("service") / "runs"
    d.mkdir()
    shutil.copytree(smoke_run, d / "smoke", ignore=shutil.ignore_patterns("search", "train", "exports"))
    return d


@pytest.fixture(scope="module")
def client(runs_dir):
    from metaprune.service.api import create_app

    app = create_app(runs_dir, token=TOKEN, extra_hosts=("testserver",), poll_s=0.2)
    with TestClient(app) as c:
        yield c


def _wait(client, job_id, timeout=240):
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/jobs/{job_id}", headers=AUTH).json()
        if job["state"] not in ("queued", "running"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.3)


def test_search_job_front_and_exports(client, runs_dir):
    """Start a search on a smoke run, poll it to done, read its progress events and front, export the
    best candidate under a budget (its MACs checked with count_cost) and one as ONNX."""
    from pruningnet import count_cost

    from metaprune.specfile import load_spec

    r = client.post("/api/runs/smoke/searches", headers=AUTH,
                    json={"config": "smoke", "strategy": "pareto"})
    assert r.status_code == 202, r.json()
    job = _wait(client, r.json()["id"])
    assert job["state"] == "done", job
    assert job["threads"] == 2 and job["command"].startswith("metaprune search ")
    events = client.get(f"/api/events?job={job['id']}", headers=AUTH).json()["events"]
    gens = [e["data"]["generation"] for e in events if e["type"] == "progress" and "generation" in e["data"]]
    assert gens == sorted(gens) and gens[-1] == 3, events
    assert [e["data"]["state"] for e in events if e["type"] == "state"] == ["queued", "running", "done"]
    assert client.get(f"/api/events?job={job['id']}&after={events[-2]['id']}", headers=AUTH).json()["events"] \
        == events[-1:]
    r = client.get(f"/api/events/stream?job={job['id']}&after={events[0]['id']}&max_s=0.3", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    sse = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
    assert sse == events[1:]  # the same events as the polling fallback, in order

    doc = client.get("/api/runs/smoke/front?baselines=1", headers=AUTH).json()
    assert {"run", "strategy", "budgets", "objectives", "front", "baselines"} <= set(doc)
    assert len(doc["candidates"]) == 24 and doc["finished"] is True and len(doc["baselines"]) == 1
    front = doc["front"]
    assert front and all(f["id"] in {c["id"] for c in doc["candidates"]} for f in front)

    budget = sorted(c["macs"] for c in front)[len(front) // 2]
    r = client.get(f"/api/runs/smoke/export?max_macs={budget}", headers=AUTH)
    assert r.status_code == 200, r.text
    fits = [c for c in doc["candidates"] if c["macs"] <= budget]
    best = min(fits, key=lambda c: (-c["top1"], c["macs"], c["id"]))
    assert int(r.headers["X-Metaprune-Candidate"]) == best["id"]
    spec_file = runs_dir / "smoke" / "exports" / f"candidate-{best['id']}.json"
    assert json.loads(r.content) == json.loads(spec_file.read_text())
    assert count_cost(load_spec(spec_file))["macs"] == best["macs"] <= budget

    r = client.get(f"/api/runs/smoke/export?candidate={front[0]['id']}&format=onnx", headers=AUTH)
    assert r.status_code == 200 and r.headers["content-disposition"].startswith("attachment")
    import onnx

    model = onnx.load_from_string(r.content)
    opts = json.loads((runs_dir / "smoke" / "space.json").read_text())["options"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    assert dims == [opts["in_channels"], opts["input_size"], opts["input_size"]]

    runs = client.get("/api/runs", headers=AUTH).json()["runs"]
    assert runs[0]["name"] == "smoke" and runs[0]["search"]["state"] == "done"
    shown = client.get("/api/runs/smoke", headers=AUTH).json()
    assert shown["curve"] and shown["config"]["seed"] == 0 and shown["jobs"][0]["id"] == job["id"]


def test_failed_job_shows_its_one_line_error(client, runs_dir):
    """A job whose command fails shows ``failed`` with the command's one-line error."""
    r = client.post("/api/runs", headers=AUTH,
                    json={"name": "too-big-batch", "config": "smoke", "overrides": {"train.batch_size": 100000}})
    assert r.status_code == 202, r.json()
    job = _wait(client, r.json()["id"])
    assert job["state"] == "failed" and job["exit_code"] == 2, job
    assert job["error"].startswith("train.batch_size=100000 is larger than the training split"), job
    assert not (runs_dir / "too-big-batch").exists()  # refused before a file was written
    assert client.post(f"/api/jobs/{job['id']}/resume", headers=AUTH).status_code == 409


def test_cancel_restart_interrupted_resume(tmp_path, smoke_run):
    """On a real server: cancel kills the job's process group; after kill -9 of the server the running
    job shows ``interrupted`` on restart (SQLite), and resuming it finishes the search."""
    runs = tmp_path / "runs"
    runs.mkdir()
    shutil.copytree(smoke_run, runs / "smoke", ignore=shutil.ignore_patterns("search", "train", "exports"))
    srv = Server(runs)
    try:
        assert stat.S_IMODE(os.stat(runs / "service-token").st_mode) == 0o600
        body = {"config": "smoke", "strategy": "pareto", "overrides": {"generations": 5}}
        status, job = srv.request("POST", "/api/runs/smoke/searches", body)
        assert status == 202, job
        running = srv.wait_job(job["id"], predicate=lambda j: (j.get("progress") or {}).get("generation", 0) >= 1)
        assert running["state"] == "running" and pid_alive(running["pid"])
        status, cancelled = srv.request("POST", f"/api/jobs/{job['id']}/cancel")
        assert status == 200 and cancelled["state"] == "cancelled", cancelled
        assert not pid_alive(running["pid"])
        assert srv.request("POST", f"/api/jobs/{job['id']}/cancel")[0] == 409

        status, resumed = srv.request("POST", f"/api/jobs/{job['id']}/resume")
        assert status == 202 and resumed["resumes"] == job["id"] and "--resume" in resumed["command"]
        assert srv.request("POST", "/api/runs/smoke/searches", {**body, "overwrite": True})[0] == 409  # busy
        srv.wait_job(resumed["id"], predicate=lambda j: (j.get("progress") or {}).get("generation", 0) >= 2)
        child = srv.request("GET", f"/api/jobs/{resumed['id']}")[1]["pid"]
        srv.kill9()
        assert pid_alive(child)  # the job outlives its server (own session) ...
    finally:
        srv.stop()

    srv = Server(runs)  # a new server on the same runs directory
    try:
        status, job2 = srv.request("GET", f"/api/jobs/{resumed['id']}")
        assert status == 200 and job2["state"] == "interrupted", job2
        assert "resume" in job2["error"]
        states = [j["state"] for j in srv.request("GET", "/api/jobs")[1]["jobs"]]
        assert states == ["interrupted", "cancelled"]
        assert not pid_alive(child)  # ... until the next server stops it
        status, again = srv.request("POST", f"/api/jobs/{resumed['id']}/resume")
        assert status == 202, again
        done = srv.wait_job(again["id"])
        assert done["state"] == "done", done
        front = srv.request("GET", "/api/runs/smoke/front")[1]
        assert front["finished"] is True and front["generation"] == 4 and len(front["candidates"]) == 8 * 5
    finally:
        srv.stop()
