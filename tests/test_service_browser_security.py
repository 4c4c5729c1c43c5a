"""The page of ``metaprune serve`` in a real browser (Debian's headless Chromium driven by Playwright,
never `playwright install`) against the two browser attacks of issue 27:

(a) markup planted in run files (status.json state and step, metrics loss, space name and options,
    search strategy, candidate ids and channel names, result strings, a job's error) is shown as
    text and never runs;
(b) a page served on another local port cannot change state through the browser, even while the
    browser holds the cookie an older server set (a browser sends a host's cookies to all its ports).
"""
from __future__ import annotations

import http.server
import shutil
import threading
import time

import pytest

pytest.importorskip("fastapi")

from service_helpers import XSS, Server, free_port, make_run, plant_hostile_run, wait_until  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (scripts/test.sh installs "
                                                         "it with apt-get where apt is available; it was not here)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server over a synthetic run (`target`) and a hostile one, plus a failed job whose error
    is markup (as a job's last log line would carry it)."""
    from metaprune.service.db import Database

    runs = tmp_path_factory.mktemp("browser-security") / "runs"
    runs.mkdir()
    make_run(runs, "target", search=6)
    plant_hostile_run(runs)
    db = Database(runs / "service.sqlite3")
    job = db.create_job("search", "hostile", {}, ["search"])
    db.update_job(job["id"], state="failed", ended=time.time(), exit_code=2, error=XSS)
    db.close()
    srv = Server(runs)
    yield srv
    srv.stop()


def _launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])


INJECTED = ("[document.querySelectorAll('.pwn').length, document.querySelectorAll('#main img, #main script').length,"
            " window.__pwned === undefined]")


def test_markup_in_run_files_is_shown_as_text_and_never_runs(server):
    from playwright.sync_api import sync_playwright

    srv = server
    with sync_playwright() as p:
        browser = _launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        errors, dialogs = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{srv.base}/?token={srv.token}")
        assert "token=" not in page.url  # the token leaves the address bar for sessionStorage
        page.wait_for_selector("#runs tr[data-run='hostile']")
        row = page.text_content("#runs tr[data-run='hostile']")
        assert XSS[:80] in row and "damaged: status.json has state" in row, row  # space name and reason, as text
        assert page.evaluate(INJECTED) == [0, 0, True]

        page.click("#runs a[href='#/run/hostile']")
        wait_until(page, "document.querySelector('#report table') !== null", 20)
        wait_until(page, "document.querySelector('#selected')?.textContent.includes('damaged search record')")
        assert XSS[:80] in page.text_content("#run-space")
        assert XSS in page.text_content("#report")  # a result's strings, in table cells as text
        assert XSS in page.text_content("#jobs")  # the failed job's error
        meta = page.text_content("#meta-status")
        assert "step 10 / 10, loss -" in meta and "<" not in meta, meta  # markup where numbers belong: dropped
        assert "6 damaged search record(s) left out" in page.text_content("#selected")
        assert page.evaluate("document.querySelectorAll('#front .point').length") == 4  # the well-formed ones
        assert page.evaluate(INJECTED) == [0, 0, True]
        assert page.evaluate("[...document.scripts].map((s) => s.getAttribute('src'))") == [
            "/static/vendor/plotly-basic.min.js", "/static/app.js"]
        assert not dialogs and not errors, (dialogs, errors)
        browser.close()


ATTACK = """<!doctype html><html><body><iframe name="sink"></iframe><script>
const T = "%(base)s", out = window.results = {};
const post = (path, body) => fetch(T + path, {method: "POST", mode: "no-cors", credentials: "include",
  headers: {"Content-Type": "text/plain"}, body}).then(() => "sent", (e) => "error");
Promise.all([
  fetch(T + "/api/jobs/%(job)d/cancel", {method: "POST", credentials: "include"})
    .then((r) => r.status, () => "blocked"),
  post("/api/runs/target/searches", JSON.stringify({config: "smoke", strategy: "pareto", overwrite: true})),
  post("/api/runs", JSON.stringify({name: "planted", config: "smoke"})),
  post("/api/runs/target/export", JSON.stringify({candidate: 0, format: "onnx"})),
  fetch(T + "/api/runs", {credentials: "include"}).then((r) => r.text(), () => "blocked"),
  fetch(T + "/api/runs/target/front", {mode: "no-cors", credentials: "include"}).then(() => "sent", () => "error"),
]).then((r) => {
  [out.cancel, out.search, out.run, out.export, out.read, out.front] = r;
  const f = document.createElement("form");  // a classic form post in a hidden frame
  f.method = "POST"; f.action = T + "/api/jobs/%(job)d/cancel"; f.target = "sink"; f.enctype = "text/plain";
  document.body.append(f); f.submit();
  setTimeout(() => { document.title = "attacked"; }, 1500);
});
</script></body></html>"""


class Attacker:
    """A page server on another local port that records the cookies the browser sends it."""

    def __init__(self, html: str):
        cookies = self.cookies = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                cookies.append(self.headers.get("Cookie") or "")
                body = html.encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass

        self.port = free_port()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.port}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_a_page_on_another_local_port_cannot_change_state(server):
    """The browser holds the old cookie and visits a page on another local port that posts to the
    API (fetch, no-cors fetch, a form): no job is cancelled or started, nothing is exported, nothing
    is read. Opening the real page expires the cookie; the token in the header still works."""
    from playwright.sync_api import sync_playwright

    srv = server
    status, victim = srv.request("POST", "/api/runs", {"name": "victim", "config": "smoke"})
    assert status == 202, victim
    jobs_before = [j["id"] for j in srv.request("GET", "/api/jobs")[1]["jobs"]]
    target = srv.runs_dir / "target"
    files_before = sorted(str(f.relative_to(target)) for f in target.rglob("*"))
    attacker = Attacker(ATTACK % {"base": srv.base, "job": victim["id"]})
    try:
        with sync_playwright() as p:
            browser = _launch(p)
            context = browser.new_context()
            context.add_cookies([{"name": "metaprune_token", "value": srv.token, "url": srv.base + "/"}])
            page = context.new_page()
            page.goto(attacker.url)
            page.wait_for_function("document.title === 'attacked'", timeout=20_000)
            results = page.evaluate("window.results")
            assert results["cancel"] == "blocked" and results["read"] == "blocked", results  # no CORS: unreadable
            assert srv.token in attacker.cookies[0]  # why a cookie can never be the credential

            job = srv.request("GET", f"/api/jobs/{victim['id']}")[1]
            assert job["state"] in ("queued", "running"), job
            assert [j["id"] for j in srv.request("GET", "/api/jobs")[1]["jobs"]] == jobs_before
            assert sorted(str(f.relative_to(target)) for f in target.rglob("*")) == files_before
            assert not (srv.runs_dir / "planted").exists()

            real = context.new_page()  # the user opens the real page: the old cookie is expired
            real.goto(f"{srv.base}/?token={srv.token}")
            real.wait_for_selector("#runs tr[data-run='target']")
            assert not [c for c in context.cookies() if c["name"] == "metaprune_token"]
            page.goto(attacker.url)
            page.wait_for_function("document.title === 'attacked'", timeout=20_000)
            assert srv.token not in attacker.cookies[-1]
            assert srv.request("GET", f"/api/jobs/{victim['id']}")[1]["state"] in ("queued", "running")
            browser.close()
    finally:
        attacker.close()
        status, cancelled = srv.request("POST", f"/api/jobs/{victim['id']}/cancel")  # the token works
    assert status == 200 and cancelled["state"] == "cancelled", cancelled
    shown = srv.request("GET", "/api/runs/victim")
    assert shown[0] in (200, 404)  # cancelled before or after its run directory appeared
    if shown[0] == 200:
        assert shown[1]["meta_training"]["state"] != "running", shown[1]["meta_training"]
