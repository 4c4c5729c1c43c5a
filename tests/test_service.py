"""``metaprune serve``: the API with FastAPI's TestClient and with a real server process, real
subprocess jobs on a smoke run, SQLite state across a kill -9 of the server, and the page in a real
browser."""
from __future__ import annotations

import json
import os
import shutil
import stat
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from service_helpers import Server, pid_alive, runs_with_smoke, wait_until  # noqa: E402

TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def runs_dir(smoke_run, tmp_path_factory):
    return runs_with_smoke(smoke_run, tmp_path_factory.mktemp("service"))


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


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def live(smoke_run, tmp_path_factory):
    """A real ``metaprune serve`` over a copy of the smoke run, shared by the page and API tests."""
    srv = Server(runs_with_smoke(smoke_run, tmp_path_factory.mktemp("live")))
    yield srv
    srv.stop()


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs it "
                                             "with apt-get where apt is available; it was not here)")
def test_page_launch_search_hover_select_download(live, tmp_path):
    """A real browser (Debian's headless Chromium driven by Playwright, never `playwright install`):
    open the page with the token, launch a search on a smoke run, wait for it, hover a front point and
    read the tooltip, select it and download its export."""
    from playwright.sync_api import sync_playwright

    srv = live
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 1100}, accept_downloads=True)
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        # the page works under its Content-Security-Policy (no inline script or style is refused)
        page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
        page.goto(f"{srv.base}/?token={srv.token}")
        page.wait_for_selector("#runs a[href='#/run/smoke']")
        page.click("#runs a[href='#/run/smoke']")

        page.wait_for_selector("#search-form")
        page.fill("#search-form [name=max_macs]", "15M")
        page.select_option("#search-form [name=strategy]", "pareto")
        page.select_option("#search-form [name=config]", "smoke")
        page.click("#search-start")
        wait_until(page, "document.querySelector('#search-state')?.textContent.trim() === 'running'", 60)
        wait_until(page, "document.querySelector('#search-state')?.textContent.trim() === 'done'", 240)
        # the front, then the uniform-width baselines scored once the search is done
        wait_until(page, "document.querySelector('#front')?.textContent.includes('uniform width')", 120)
        page.wait_for_timeout(500)

        front = srv.request("GET", "/api/runs/smoke/front")[1]["front"]
        pos = page.evaluate("metaprunePointPosition(0)")
        page.mouse.move(pos["x"], pos["y"])
        page.wait_for_selector(".hoverlayer .hovertext", timeout=10_000)
        tip = page.text_content(".hoverlayer .hovertext")
        cand = next(c for c in front if c["id"] == pos["id"])
        assert f"id {cand['id']}" in tip and "MACs" in tip and "proxy top-1" in tip, tip
        assert f"{100 * cand['top1']:.2f}%" in tip and "channels [" in tip, tip

        page.mouse.click(pos["x"], pos["y"])
        wait_until(page, f"document.querySelector('#selected')?.textContent.includes('candidate {cand['id']}')")
        with page.expect_download() as dl:
            page.click("#export-json")
        spec = json.loads(open(dl.value.path()).read())
        assert spec["channels"] == cand["channels"] and spec["metrics"]["macs"] == cand["macs"]

        shot = os.environ.get("METAPRUNE_SCREENSHOT") or str(tmp_path / "run-page.png")
        page.screenshot(path=shot, full_page=True)
        assert not errors, errors
        browser.close()


def test_search_job_events_front_and_exports(live):
    """The search (the page's, or one started here when there is no browser): its state and progress
    events by polling and by server-sent events, the front as `pareto --json` gives it, the best
    candidate under a budget exported (MACs checked with count_cost) and one as ONNX."""
    import urllib.request

    import onnx
    from pruningnet import count_cost

    from metaprune.store.specfile import load_spec

    srv, runs_dir = live, live.runs_dir
    jobs = srv.request("GET", "/api/jobs?run=smoke")[1]["jobs"]
    if not any(j["kind"] == "search" and j["state"] == "done" for j in jobs):
        status, job = srv.request("POST", "/api/runs/smoke/searches", {"config": "smoke", "strategy": "pareto"})
        assert status == 202, job
        srv.wait_job(job["id"])
        jobs = srv.request("GET", "/api/jobs?run=smoke")[1]["jobs"]
    job = next(j for j in jobs if j["kind"] == "search")
    assert job["state"] == "done", job
    assert job["threads"] == 2 and job["command"].startswith("metaprune search ")
    events = srv.request("GET", f"/api/events?job={job['id']}")[1]["events"]
    gens = [e["data"]["generation"] for e in events if e["type"] == "progress" and "generation" in e["data"]]
    assert gens == sorted(gens) and gens[-1] == 3, events
    assert [e["data"]["state"] for e in events if e["type"] == "state"] == ["queued", "running", "done"]
    assert srv.request("GET", f"/api/events?job={job['id']}&after={events[-2]['id']}")[1]["events"] == events[-1:]
    req = urllib.request.Request(f"{srv.base}/api/events/stream?job={job['id']}&after={events[0]['id']}&max_s=0.3",
                                 headers={"Authorization": f"Bearer {srv.token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        sse = [json.loads(line[6:]) for line in r.read().decode().splitlines() if line.startswith("data: ")]
    assert sse == events[1:]  # the same events as the polling fallback, in order

    status, base = srv.request("POST", "/api/runs/smoke/baselines", {"count": 3})  # the page's request: cached
    assert status == 200 and len(base["baselines"]) == 3, base
    doc = srv.request("GET", "/api/runs/smoke/front")[1]
    assert {"run", "strategy", "budgets", "objectives", "front", "baselines"} <= set(doc)
    assert len(doc["candidates"]) == 24 and doc["finished"] is True and doc["baselines"] == base["baselines"]
    front = doc["front"]
    assert front and all(f["id"] in {c["id"] for c in doc["candidates"]} for f in front)

    budget = sorted(c["macs"] for c in front)[len(front) // 2]
    status, spec_doc = srv.request("POST", "/api/runs/smoke/export", {"max_macs": budget})
    assert status == 200, spec_doc
    fits = [c for c in doc["candidates"] if c["macs"] <= budget]
    best = min(fits, key=lambda c: (-c["top1"], c["macs"], c["id"]))
    spec_file = runs_dir / "smoke" / "exports" / f"candidate-{best['id']}.json"
    assert spec_doc == json.loads(spec_file.read_text())
    assert count_cost(load_spec(spec_file))["macs"] == best["macs"] <= budget

    status, blob = srv.request("POST", "/api/runs/smoke/export", {"candidate": front[0]["id"], "format": "onnx"})
    assert status == 200
    model = onnx.load_from_string(blob)
    opts = json.loads((runs_dir / "smoke" / "space.json").read_text())["options"]
    dims = [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim][1:]
    assert dims == [opts["in_channels"], opts["input_size"], opts["input_size"]]

    runs = srv.request("GET", "/api/runs")[1]["runs"]
    assert runs[0]["name"] == "smoke" and runs[0]["search"]["state"] == "done"
    shown = srv.request("GET", "/api/runs/smoke")[1]
    assert shown["curve"] and shown["config"]["seed"] == 0 and any(j["id"] == job["id"] for j in shown["jobs"])


def test_failed_job_shows_its_one_line_error(client, runs_dir):
    """A job whose command fails shows ``failed`` with the command's one-line error."""
    r = client.post("/api/runs", headers=AUTH,
                    json={"name": "too-big-batch", "config": "smoke", "overrides": {"train.batch_size": 60000}})
    assert r.status_code == 202, r.json()
    job = _wait(client, r.json()["id"])
    assert job["state"] == "failed" and job["exit_code"] == 2, job
    assert job["error"].startswith("train.batch_size=60000 is larger than the training split"), job
    assert not (runs_dir / "too-big-batch").exists()  # refused before a file was written
    assert client.post(f"/api/jobs/{job['id']}/resume", headers=AUTH).status_code == 409


def test_cancel_restart_interrupted_resume(live):
    """On the real server (this module's last test: it kills it): cancel kills the job's process
    group; after kill -9 of the server the running job shows ``interrupted`` on restart (SQLite), and
    resuming it finishes the search."""
    srv, runs = live, live.runs_dir
    try:
        assert stat.S_IMODE(os.stat(runs / "service-token").st_mode) == 0o600
        # 4 short generations replacing the earlier search: 6 + 3 x 6 = 24 candidates on 100 images
        body = {"config": "smoke", "strategy": "pareto", "overwrite": True, "overrides": {
            "generations": 4, "population": 6, "mutations": 3, "crossovers": 3, "eval.max_images": 100}}
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
        assert srv.request("POST", "/api/runs/smoke/searches", body)[0] == 409  # busy
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
        states = [j["state"] for j in srv.request("GET", "/api/jobs?run=smoke&limit=2")[1]["jobs"]]
        assert states == ["interrupted", "cancelled"]
        assert not pid_alive(child)  # ... until the next server stops it
        status, again = srv.request("POST", f"/api/jobs/{resumed['id']}/resume")
        assert status == 202, again
        done = srv.wait_job(again["id"])
        assert done["state"] == "done", done
        front = srv.request("GET", "/api/runs/smoke/front")[1]
        assert front["finished"] is True and front["generation"] == 3 and len(front["candidates"]) == 6 + 3 * 6
    finally:
        srv.stop()
