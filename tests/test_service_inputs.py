"""``metaprune serve`` refuses bad requests: 401 without the token, 403 for a foreign Host or Origin,
404 for unknown runs/jobs/spaces, 409 for conflicts, 413 for big bodies, 422 naming the field for bad
values; and a rejected request changes nothing in the runs directory."""
from __future__ import annotations

import shutil

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

from service_helpers import runs_with_smoke  # noqa: E402

TOKEN = "input-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def setup(smoke_run, tmp_path_factory):
    from metaprune.service.api import create_app

    d = runs_with_smoke(smoke_run, tmp_path_factory.mktemp("service-inputs"))
    (d / "untrained").mkdir()
    for f in ("config.yaml", "space.json", "split.json"):
        shutil.copy(smoke_run / f, d / "untrained" / f)
    app = create_app(d, token=TOKEN, extra_hosts=("testserver",), start_jobs=False)
    with TestClient(app) as c:
        yield c, d


BAD = [
    # (method, path, json body, expected status, expected field)
    ("POST", "/api/runs/smoke/searches", {"max_macs": "lots"}, 422, "max_macs"),
    ("POST", "/api/runs/smoke/searches", {"max_macs": "-5M"}, 422, "max_macs"),
    ("POST", "/api/runs/smoke/searches", {"max_macs": "1K"}, 422, "max_macs"),  # below the smallest network
    ("POST", "/api/runs/smoke/searches", {"max_params": "nan"}, 422, "max_params"),
    ("POST", "/api/runs/smoke/searches", {"max_latency_ms": -1}, 422, "max_latency_ms"),
    ("POST", "/api/runs/smoke/searches", {"strategy": "greedy"}, 422, "strategy"),
    ("POST", "/api/runs/smoke/searches", {"config": "../../etc/passwd"}, 422, "config"),
    ("POST", "/api/runs/smoke/searches", {"config": "smoke", "overrides": {"generations": -1}}, 422,
     "overrides.generations"),
    ("POST", "/api/runs/smoke/searches", {"config": "smoke", "overrides": {"nope": 1}}, 422, "overrides"),
    ("POST", "/api/runs/smoke/searches", {"config": "smoke", "strategy": "constrained"}, 422, "max_macs"),
    ("POST", "/api/runs/smoke/searches", {"objectives": ["speed"]}, 422, "objectives.0"),
    ("POST", "/api/runs/smoke/searches", {"colour": "red"}, 422, "colour"),
    ("POST", "/api/runs/smoke/searches", [1, 2], 422, "body"),
    ("POST", "/api/runs/untrained/searches", {"max_macs": "10M"}, 409, "run"),
    ("POST", "/api/runs/nope/searches", {"max_macs": "10M"}, 404, "run"),
    ("POST", "/api/runs/..%2F..%2Fetc/searches", {"max_macs": "10M"}, 404, None),
    ("POST", "/api/runs", {"name": "../escape", "config": "smoke"}, 422, "name"),
    ("POST", "/api/runs", {"name": ".hidden", "config": "smoke"}, 422, "name"),
    ("POST", "/api/runs", {"name": "smoke", "config": "smoke"}, 409, "name"),
    ("POST", "/api/runs", {"name": "new", "config": "nope"}, 422, "config"),
    ("POST", "/api/runs", {"name": "new", "config": "smoke", "overrides": {"data.root": "x"}}, 422, "overrides.data.root"),
    ("POST", "/api/runs", {"name": "new", "config": "smoke", "overrides": {"data.download": True}}, 422,
     "overrides.data.download"),
    ("POST", "/api/runs", {"name": "new", "config": "smoke", "overrides": {"data.name": "/etc/passwd"}}, 422,
     "overrides.data.name"),
    ("POST", "/api/runs", {"name": "new", "config": "smoke", "overrides": {"train.lr": "fast"}}, 422, "overrides"),
    ("POST", "/api/runs", {"name": "new", "config": "smoke", "overrides": {"train; rm -rf /": 1}}, 422,
     "overrides.train; rm -rf /"),
    ("POST", "/api/runs", {"config": "smoke"}, 422, "name"),
    ("POST", "/api/runs/smoke/trainings", {"candidate": 1}, 409, "run"),  # the copy has no search
    ("POST", "/api/runs/smoke/trainings", {"seeds": 0}, 422, "seeds"),
    ("POST", "/api/runs/smoke/trainings", {"recipe": "nope"}, 422, "recipe"),
    ("GET", "/api/runs/smoke/front", None, 404, "run"),
    ("POST", "/api/runs/smoke/export", {"candidate": 1}, 409, "run"),
    ("POST", "/api/runs/smoke/export", {"candidate": 1, "format": "pdf"}, 422, "format"),
    ("POST", "/api/runs/smoke/export", {"format": "json", "with_weights": True, "candidate": 1}, 422, "with_weights"),
    ("GET", "/api/runs/smoke/export?candidate=1", None, 405, None),  # GET has no side effects: no export
    ("GET", "/api/runs/smoke/report", None, 404, "run"),
    ("GET", "/api/runs/nope", None, 404, "run"),
    ("GET", "/api/jobs/999", None, 404, "job"),
    ("GET", "/api/jobs/abc", None, 422, "job_id"),
    ("POST", "/api/jobs/999/cancel", None, 404, "job"),
    ("POST", "/api/jobs/999/resume", None, 404, "job"),
    ("GET", "/api/jobs?state=exploded", None, 422, "state"),
    ("GET", "/api/events?after=-1", None, 422, "after"),
    ("GET", "/api/spaces/nope", None, 404, "space"),
    ("GET", "/api/spaces/mobilenet_v2?width_mult=-1", None, 422, "width_mult"),
]


SERVICE_FILES = {"service.sqlite3", "service.sqlite3-wal", "service.sqlite3-shm", "service-token", ".service-logs",
                 "service.lock"}


def _runs_state(runs, tree_hash):
    """The runs directory apart from the service's own database, token and logs."""
    return {p.name: tree_hash(p) if p.is_dir() else p.read_bytes() for p in runs.iterdir()
            if p.name not in SERVICE_FILES}


def test_bad_requests_get_a_json_error_naming_the_field_and_change_nothing(setup, tree_hash):
    client, runs = setup
    before = _runs_state(runs, tree_hash)
    for method, path, body, status, field in BAD:
        r = client.request(method, path, headers=AUTH, json=body)
        doc = r.json()
        assert r.status_code == status, (path, body, doc)
        assert set(doc) == {"error", "field"} and doc["error"] and "\n" not in doc["error"], doc
        assert "Traceback" not in doc["error"]
        if field is not None:
            assert doc["field"] == field, (path, body, doc)
    assert _runs_state(runs, tree_hash) == before
    assert client.get("/api/jobs", headers=AUTH).json()["jobs"] == []


def test_token_host_origin_and_size(setup, tree_hash):
    client, runs = setup
    before = _runs_state(runs, tree_hash)
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-Metaprune-Token": "wrong"}):
        for path in ("/api/runs", "/api/configs", "/api/jobs", "/api/events", "/api/spaces"):
            r = client.get(path, headers=headers)
            assert r.status_code == 401 and r.json()["field"] == "token", (path, headers)
    assert client.get("/api/runs", headers={"X-Metaprune-Token": TOKEN}).status_code == 200
    assert client.get("/?token=wrong", follow_redirects=False).status_code == 401
    # the page, its assets and the API description hold no data: they load without the token (the
    # page then sends it in a header), with a policy that forbids inline script
    for path in ("/", "/static/app.js", "/docs", "/openapi.json"):
        r = client.get(path)
        assert r.status_code == 200, path
        assert "script-src 'self'" in r.headers["content-security-policy"], path
        assert r.headers["x-content-type-options"] == "nosniff" and r.headers["referrer-policy"] == "no-referrer"

    r = client.get("/api/runs", headers={**AUTH, "Host": "evil.example:8000"})
    assert r.status_code == 403 and r.json()["field"] == "Host"  # DNS rebinding
    r = client.post("/api/runs", headers={**AUTH, "Content-Length": str(10**6)}, content=b"x" * 10**6)
    assert r.status_code == 413 and r.json()["field"] == "body"

    # the browser: the token in the URL once (the page keeps it in sessionStorage, per origin); no
    # cookie, which a browser would send to every port of this host: an old one is expired, and refused
    client.cookies.set("metaprune_token", TOKEN)
    try:
        r = client.get("/api/runs")
        assert r.status_code == 401 and "cookie is not accepted" in r.json()["error"]
        r = client.get(f"/?token={TOKEN}", follow_redirects=False)
        assert r.status_code == 200 and "plotly-basic.min.js" in r.text and "<script>" not in r.text
        assert 'metaprune_token=""' in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]
    finally:
        client.cookies.clear()
    assert client.get("/static/vendor/plotly-basic.min.js").status_code == 200
    docs = client.get("/docs").text  # the API page needs no CDN, and has no inline script either
    assert "/static/vendor/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower() and "<script>" not in docs
    assert client.get("/openapi.json").json()["info"]["title"] == "metaprune"
    body = {"name": "x", "config": "nope"}
    r = client.post("/api/runs", json=body, headers={**AUTH, "Origin": "http://evil.example"})
    assert r.status_code == 403 and r.json()["field"] == "Origin"
    r = client.post("/api/runs", json=body, headers={**AUTH, "Origin": "http://testserver:8000"})
    assert r.status_code == 422 and r.json()["field"] == "config"  # past the guard, refused on its merits
    assert _runs_state(runs, tree_hash) == before


def test_serve_refuses_remote_host_without_allow_remote(cli, tmp_path):
    code, out, err = cli("serve", "--runs-dir", tmp_path / "r", "--host", "0.0.0.0")
    assert code == 2 and err.count("\n") == 1 and "--allow-remote" in err and "0.0.0.0" in err
    assert not (tmp_path / "r").exists()
    code, out, err = cli("serve", "--runs-dir", tmp_path / "r", "--port", "0")
    assert code == 2 and "--port" in err


def test_spaces_and_configs(setup):
    client, _ = setup
    names = [s["name"] for s in client.get("/api/spaces", headers=AUTH).json()["spaces"]]
    assert {"mobilenet_v1", "mobilenet_v2", "resnet50"} <= set(names)
    info = client.get("/api/spaces/mobilenet_v2?input_size=32&small_input=true&num_classes=10", headers=AUTH).json()
    assert info["options"]["input_size"] == 32 and info["min_macs"] < info["max_macs"] and info["units"]
    cfg = client.get("/api/configs", headers=AUTH).json()
    assert "smoke" in cfg["meta_train"] and "smoke" in cfg["search"] and "smoke" in cfg["train"]


def test_wildcard_remote_bind_accepts_any_host_but_still_needs_the_token(tmp_path):
    """`serve --host 0.0.0.0 --allow-remote` is reached under names the server cannot know: the Host
    check is off there, the token is not."""
    from metaprune.service.api import create_app

    app = create_app(tmp_path / "runs", token=TOKEN, host="0.0.0.0", check_host=False, start_jobs=False)
    with TestClient(app, base_url="http://gpu-box.lan:8000") as c:
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers=AUTH).json() == {"runs": []}
