"""The HTTP API and web page of ``metaprune serve`` (FastAPI).

The run directories under the runs directory stay the source of truth; this module reads them, and
changes them only through jobs (subprocesses of the ``metaprune`` commands) and exports. Clients
name configs by shipped name and runs, jobs and candidates by id: no paths, no commands.

Errors are JSON ``{"error": ONE LINE, "field": NAME|null}``: 401 without the token, 403 for a
foreign Host/Origin, 404 for an unknown run/job/space, 409 for a conflict (a run busy with a job, a
name taken), 413 for a body over 64 KiB, 422 for a bad value (naming the field and what is accepted).
A rejected request changes nothing in the runs directory.
"""
from __future__ import annotations

import asyncio
import json
import math
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Literal

import yaml
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pruningnet.errors import UserError

from . import progress as prog
from .db import ACTIVE, FINAL, Database
from .jobs import JobManager, resume_argv
from .security import (COOKIE, LOOPBACK_HOSTS, MAX_BODY_BYTES, host_name, origin_host, token_ok)

STATIC = Path(__file__).resolve().parent / "static"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: config keys a client may not set: they name files, directories or downloads on the server
FORBIDDEN_KEY = re.compile(r"(^|\.)(root|download|address|\w*path|\w*dir|\w*file)$")
EXPORT_FORMATS = {"json": ".json", "onnx": ".onnx", "torchscript": ".pt"}
EXPORT_TIMEOUT_S = 600


class ApiError(Exception):
    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(message)
        self.status, self.message, self.field = status, message, field


def _err(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


Scalar = str | int | float | bool | None


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetaTrainRequest(_Body):
    name: str = Field(description="New run's name (a directory under the runs directory): letters, digits, "
                                  "'.', '_', '-', at most 64 characters.")
    config: str = Field("smoke", description="A shipped meta-training config (GET /api/configs).")
    overrides: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict,
                                                        description="Config keys, e.g. {\"train.epochs\": 2}.")


class SearchRequest(_Body):
    config: str | None = Field(None, description="A shipped search config [default: MetaPruning's search].")
    strategy: Literal["constrained", "pareto"] | None = None
    max_macs: str | int | None = Field(None, description="MACs budget (the papers' FLOPs), e.g. 150M, 1.2G.")
    max_params: str | int | None = Field(None, description="Parameter budget, e.g. 2M.")
    max_latency_ms: float | None = Field(None, description="Latency budget in ms (needs the run's latency table).")
    objectives: list[Literal["macs", "params", "latency_ms"]] | None = None
    overrides: dict[str, Scalar | list[Scalar]] = Field(default_factory=dict)
    overwrite: bool = Field(False, description="Replace the run's existing search.")


class TrainRequest(_Body):
    candidate: int | None = Field(None, description="Candidate id of the run's search.")
    max_macs: str | int | None = Field(None, description="Or: the best candidate under this MACs budget.")
    max_params: str | int | None = None
    recipe: str = Field("smoke", description="A shipped training recipe (GET /api/configs).")
    seeds: int = Field(1, ge=1, le=20)
    epochs: int | None = Field(None, ge=1, le=10_000)
    budget: Literal["scratch-e", "scratch-b"] = "scratch-e"


def _field_of(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts) or "body"


def _check_name(name: str, field: str = "name") -> str:
    if not NAME_RE.match(name or ""):
        raise ApiError(422, f"{field}={name!r} is not accepted; accepted: letters, digits, '.', '_', '-' "
                            "(at most 64, not starting with '.', '_' or '-')", field)
    return name


def _check_overrides(overrides: dict, field: str = "overrides") -> dict:
    for key, value in overrides.items():
        if not KEY_RE.match(key):
            raise ApiError(422, f"{field}: key {key!r} is not accepted; accepted: dotted config keys "
                                "such as train.epochs", f"{field}.{key}")
        if FORBIDDEN_KEY.search(key):
            raise ApiError(422, f"{field}: key {key!r} names files or downloads on the server; the service "
                                "does not accept it (start such runs with the CLI)", f"{field}.{key}")
        for v in value if isinstance(value, list) else [value]:
            if isinstance(v, float) and not math.isfinite(v):
                raise ApiError(422, f"{field}.{key}={v!r} is not accepted; accepted: a finite number",
                               f"{field}.{key}")
            if isinstance(v, str) and ("/" in v or "\\" in v or v.startswith("~") or len(v) > 200):
                raise ApiError(422, f"{field}.{key}={v!r} is not accepted; accepted: a plain value, "
                                    "not a path", f"{field}.{key}")
    return overrides


def _set_args(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: the CLI's --set reads it back
    return out


def _shipped(kind: str, name: str, field: str) -> Path:
    from ..config import CONFIG_ROOT, shipped_configs

    names = shipped_configs(kind)
    if name not in names:
        raise ApiError(422, f"{field}={name!r} is not a shipped config; accepted: {', '.join(names)}", field)
    return CONFIG_ROOT / kind / f"{name}.yaml"


def _user_error(e: UserError, field: str) -> ApiError:
    return ApiError(422, str(e), field)


def create_app(runs_dir: str | Path, *, token: str, max_jobs: int = 1, host: str = "127.0.0.1",
               port: int = 8000, extra_hosts: tuple[str, ...] = (), start_jobs: bool = True,
               poll_s: float = 0.5, gpus: int = 0, check_host: bool = True) -> FastAPI:
    """The service app over ``runs_dir``; ``extra_hosts`` are further accepted Host names;
    ``check_host=False`` (a wildcard bind with ``--allow-remote``) accepts any Host, the token still
    being required."""
    runs = Path(runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    db = Database(runs / "service.sqlite3")
    jobs = JobManager(runs, db, max_jobs, poll_s=poll_s, gpus=gpus)
    allowed_hosts = {*LOOPBACK_HOSTS, host, *extra_hosts}
    front_cache: dict[tuple, dict] = {}
    front_lock = threading.Lock()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if start_jobs:
            jobs.start()
        yield
        jobs.stop(kill=True)
        db.close()

    app = FastAPI(title="metaprune", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Channel search under MACs budgets (MACs: multiply-accumulates of conv and "
                              "linear layers, BN folded; the pruning papers' \"FLOPs\"). Every route needs "
                              "the token of the runs directory's `service-token` file.")
    app.state.db, app.state.jobs, app.state.runs_dir = db, jobs, runs

    # ---- security middleware ---------------------------------------------------------------------
    @app.middleware("http")
    async def guard(request: Request, call_next):
        h = host_name(request.headers.get("host"))
        if check_host and h not in allowed_hosts:
            return _err(403, f"Host {request.headers.get('host')!r} is not this server; accepted: "
                             f"{', '.join(sorted(allowed_hosts))}", "Host")
        length = request.headers.get("content-length")
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            if length is None and request.headers.get("transfer-encoding"):
                return _err(411, "a request body needs a Content-Length", "Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return _err(413, f"request body of {length} bytes is too large; accepted: at most "
                                 f"{MAX_BODY_BYTES} bytes", "body")
        q_token = request.query_params.get("token")
        if request.url.path == "/" and request.method == "GET" and q_token is not None:
            if not token_ok(q_token, token):
                return _err(401, "token is wrong; accepted: the one in the runs directory's service-token "
                                 "file (printed by `metaprune serve`)", "token")
            resp = RedirectResponse("/", status_code=303)
            resp.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/")
            return resp
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-metaprune-token")
        by_cookie = False
        if not given:
            given, by_cookie = request.cookies.get(COOKIE), True
        if not token_ok(given, token):
            return _err(401, "missing or wrong token; send 'Authorization: Bearer TOKEN' (TOKEN is in the runs "
                             "directory's service-token file) or open /?token=TOKEN in the browser", "token")
        if by_cookie and request.method not in ("GET", "HEAD", "OPTIONS"):
            o = origin_host(request.headers.get("origin"))
            if o is None or (check_host and o not in allowed_hosts) or o != h:
                return _err(403, f"Origin {request.headers.get('origin')!r} may not change state here; "
                                 "accepted: this server's own page", "Origin")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return _err(e.status, e.message, e.field)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, e: RequestValidationError):
        errs = e.errors()
        first = errs[0] if errs else {"loc": (), "msg": "invalid request"}
        field = _field_of(tuple(first.get("loc", ())))
        msg = first.get("msg", "invalid")
        if first.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif first.get("type") == "json_invalid":
            msg, field = "the body is not valid JSON", "body"
        return _err(422, f"{field}: {msg}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return _err(e.status_code, str(e.detail), None)

    # ---- helpers ---------------------------------------------------------------------------------
    def run_path(name: str) -> Path:
        if not NAME_RE.match(name or ""):
            raise ApiError(404, f"run {name!r} not found", "run")
        p = runs / name
        if not prog.is_run(p):
            raise ApiError(404, f"run {name!r} not found; GET /api/runs lists the runs", "run")
        return p

    def job_or_404(job_id: int) -> dict:
        job = db.job(job_id)
        if job is None:
            raise ApiError(404, f"job {job_id} not found; GET /api/jobs lists the jobs", "job")
        return job

    def not_busy(name: str) -> None:
        active = jobs.active_for_run(name)
        if active is not None:
            raise ApiError(409, f"run {name!r} is busy with job {active['id']} ({active['kind']}, "
                                f"{active['state']}); wait for it or cancel it", "run")

    def public_job(job: dict) -> dict:
        out = {k: job[k] for k in ("id", "kind", "run", "params", "state", "threads", "pid", "created", "started",
                                   "ended", "exit_code", "error", "resumes")}
        out["command"] = "metaprune " + " ".join(job["argv"])
        return out

    def budgets_of(space, max_macs=None, max_params=None, lat: float | None = None) -> dict:
        """Budgets from request fields (``150M``, ``1.2G`` or integers); 422 naming the field."""
        from ..units import parse_count

        given = {"max_macs": max_macs, "max_params": max_params}
        out = {}
        for key, field in (("macs", "max_macs"), ("params", "max_params")):
            if given[field] is None:
                continue
            try:
                out[key] = parse_count(given[field], field)
            except UserError as e:
                raise _user_error(e, field) from None
        if lat is not None:
            if not (math.isfinite(lat) and lat > 0):
                raise ApiError(422, f"max_latency_ms={lat!r} is not accepted; accepted: a positive number "
                                    "of ms", "max_latency_ms")
            out["latency_ms"] = float(lat)
        if out:
            from pruningnet.cost import cost_model

            cm = cost_model(space)
            lo = space.min_channels()
            smallest = {"macs": int(cm.macs(lo)[0]), "params": int(cm.params(lo)[0])}
            for key, field in (("macs", "max_macs"), ("params", "max_params")):
                if key in out and out[key] < smallest[key]:
                    raise ApiError(422, f"{field}={given[field]!r} is below the smallest network of "
                                        f"space {space.name} ({smallest[key]:,}); accepted: at least that",
                                   field)
        return out

    def open_run_(p: Path):
        from ..runs import open_run

        try:
            return open_run(p)
        except UserError as e:
            raise ApiError(409, f"run {p.name!r} cannot be opened: {e}", "run") from None

    # ---- page and static ---------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index():
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs():
        """The OpenAPI page, with Swagger UI served from this server (no CDN)."""
        from fastapi.openapi.docs import get_swagger_ui_html

        return get_swagger_ui_html(openapi_url="/openapi.json", title="metaprune API",
                                   swagger_js_url="/static/vendor/swagger-ui-bundle.js",
                                   swagger_css_url="/static/vendor/swagger-ui.css",
                                   swagger_favicon_url="data:,")

    # ---- spaces and configs ------------------------------------------------------------------------
    @app.get("/api/spaces")
    def spaces():
        from pruningnet import list_spaces
        from pruningnet.spaces import space_summary

        return {"spaces": [{"name": n, "summary": space_summary(n)} for n in list_spaces("*")]}

    @app.get("/api/spaces/{name}")
    def space(name: str, request: Request):
        """One space with its units and cost range; query parameters are space options
        (e.g. ``?input_size=32&small_input=true&num_classes=10``)."""
        from pruningnet import list_spaces

        from ..cli.space_cmds import space_info

        if name not in list_spaces("*"):
            raise ApiError(404, f"space {name!r} not found; accepted: {', '.join(list_spaces('*'))}", "space")
        options = {}
        for k, v in request.query_params.items():
            if not KEY_RE.match(k):
                raise ApiError(422, f"option {k!r} is not accepted", k)
            try:
                options[k] = yaml.safe_load(v) if v != "" else ""
            except yaml.YAMLError:
                options[k] = v
        try:
            return space_info(name, options)
        except (UserError, TypeError, ValueError) as e:
            raise ApiError(422, f"space {name}: {e}", "options") from None

    @app.get("/api/configs")
    def configs():
        from ..config import shipped_configs

        return {"meta_train": shipped_configs(""), "search": shipped_configs("search"),
                "train": shipped_configs("train")}

    # ---- runs ----------------------------------------------------------------------------------------
    @app.get("/api/runs")
    def list_runs():
        active = {}
        for j in db.jobs(states=ACTIVE, limit=10_000):  # newest first: the run's current job wins
            active.setdefault(j["run"], j)
        out = []
        for p in sorted((d for d in runs.iterdir() if prog.is_run(d)), key=lambda d: -d.stat().st_mtime):
            s = prog.run_summary(p)
            s["active_job"] = public_job(active[p.name]) if p.name in active else None
            out.append(s)
        return {"runs": out}

    @app.get("/api/runs/{name}")
    def show_run(name: str):
        p = run_path(name)
        s = prog.run_summary(p)
        try:
            s["config"] = yaml.safe_load((p / "config.yaml").read_text())
        except (OSError, yaml.YAMLError):
            s["config"] = None
        s["curve"] = prog.metrics_curve(p)
        active = jobs.active_for_run(name)
        s["active_job"] = public_job(active) if active else None
        s["jobs"] = [public_job(j) for j in db.jobs(run=name, limit=50)]
        s["exports"] = sorted(f.name for f in (p / "exports").glob("*")) if (p / "exports").is_dir() else []
        return s

    @app.post("/api/runs", status_code=202)
    def start_meta_training(req: MetaTrainRequest):
        """Meta-train a new run from a shipped config plus overrides (a job)."""
        from ..config import load_config
        from ..meta_config import MetaTrainConfig

        name = _check_name(req.name)
        path = _shipped("", req.config, "config")
        overrides = _check_overrides(req.overrides)
        try:
            load_config(MetaTrainConfig, path, overrides)
        except UserError as e:
            raise _user_error(e, "overrides") from None
        target = runs / name
        if target.exists() or db.jobs(run=name, limit=1):
            raise ApiError(409, f"name={name!r} is taken (a run or a job of that name exists); accepted: a "
                                "new name", "name")
        argv = ["train-pruningnet", "-c", str(path), "--run-dir", str(target), "--quiet", *_set_args(overrides)]
        job = jobs.submit("meta-train", name, req.model_dump(), argv)
        return public_job(job)

    @app.post("/api/runs/{name}/searches", status_code=202)
    def start_search(name: str, req: SearchRequest):
        """Search a meta-trained run's PruningNet under budgets (a job)."""
        from ..config import load_config
        from ..search.config import SearchConfig

        p = run_path(name)
        run = open_run_(p)
        if not run.has_pruningnet():
            raise ApiError(409, f"run {name!r} has no trained PruningNet yet; meta-train it first", "run")
        not_busy(name)
        budgets = budgets_of(run.space, req.max_macs, req.max_params, req.max_latency_ms)
        path = _shipped("search", req.config, "config") if req.config else None
        overrides = _check_overrides(req.overrides)
        full = dict(overrides)
        if req.strategy:
            full["strategy"] = req.strategy
        if req.objectives:
            full["objectives"] = list(req.objectives)
        try:
            cfg = load_config(SearchConfig, path, full)
        except UserError as e:
            raise _user_error(e, "overrides") from None
        if cfg.strategy == "constrained" and not budgets:
            raise ApiError(422, "a constrained search needs a budget: max_macs, max_params or max_latency_ms "
                                "(or strategy 'pareto')", "max_macs")
        if (p / "search" / "front.json").exists() and not req.overwrite:
            raise ApiError(409, f"run {name!r} already has a search; set overwrite=true to replace it (the old "
                                "one is kept until the new one has a generation)", "overwrite")
        argv = ["search", str(p), "--quiet"]
        if path is not None:
            argv += ["-c", str(path)]
        if req.strategy:
            argv += ["--strategy", req.strategy]
        if req.objectives:
            argv += ["--objectives", ",".join(req.objectives)]
        for key, flag in (("macs", "--max-macs"), ("params", "--max-params"), ("latency_ms", "--max-latency-ms")):
            if key in budgets:
                argv += [flag, str(budgets[key])]
        if req.overwrite:
            argv.append("--overwrite")
        argv += _set_args(overrides)
        job = jobs.submit("search", name, {**req.model_dump(), "budgets": budgets}, argv)
        return public_job(job)

    @app.post("/api/runs/{name}/trainings", status_code=202)
    def start_training(name: str, req: TrainRequest):
        """Train a searched candidate (by id or by budget) and its uniform baseline from scratch (a job)."""
        p = run_path(name)
        run = open_run_(p)
        not_busy(name)
        recipe = _shipped("train", req.recipe, "recipe")
        cand, spec_file = export_spec(p, run, req.candidate, budgets_of(run.space, req.max_macs, req.max_params),
                                      "json")
        argv = ["train", str(p), "--spec", str(spec_file), "--recipe", str(recipe), "--seeds", str(req.seeds),
                "--budget", req.budget, "--quiet"]
        if req.epochs is not None:
            argv += ["--epochs", str(req.epochs)]
        job = jobs.submit("train", name, {**req.model_dump(), "candidate": cand["id"]}, argv)
        return public_job(job)

    # ---- search results ----------------------------------------------------------------------------
    def _front_doc(p: Path) -> tuple[dict, list[dict]]:
        from ..search.store import read_candidates, read_front

        try:
            return read_front(p), read_candidates(p)["candidates"]
        except UserError as e:
            raise ApiError(404, str(e), "run") from None

    @app.get("/api/runs/{name}/front")
    def front(name: str, baselines: int = Query(0, ge=0, le=20), candidates: bool = True):
        """The Pareto front: the JSON of ``metaprune pareto --json`` (uniform baselines scored by a
        subprocess when ``baselines`` > 0, cached), plus every candidate when ``candidates``."""
        p = run_path(name)
        doc, cands = _front_doc(p)
        out = {"run": name, "strategy": doc["strategy"], "budgets": doc["budgets"],
               "objectives": doc["objectives"], "generation": doc.get("generation"),
               "finished": doc.get("finished"), "front": doc["front"], "baselines": []}
        if candidates:
            out["candidates"] = cands
        if baselines > 0:
            if jobs.active_for_run(name):
                raise ApiError(409, f"run {name!r} is busy with a job; uniform baselines are scored when it is "
                                    "done (ask with baselines=0 meanwhile)", "baselines")
            key = (name, (p / "search" / "front.json").stat().st_mtime_ns, baselines)
            with front_lock:
                if key not in front_cache:
                    front_cache[key] = _run_cli(["pareto", str(p), "--json", "--baselines", str(baselines),
                                                 "--device", "cpu"], runs, json_out=True)
                out["baselines"] = front_cache[key].get("baselines", [])
        return out

    def export_spec(p: Path, run, candidate: int | None, budgets: dict, fmt: str,
                    with_weights: bool = False) -> tuple[dict, Path]:
        from ..search.export import candidate_spec, pick_candidate
        from ..search.store import read_candidates
        from ..specfile import save_spec

        if (candidate is None) == (not budgets):
            raise ApiError(422, "give either candidate (an id) or a budget (max_macs, max_params), not both "
                                "and not neither", "candidate")
        try:
            doc = read_candidates(p)
        except UserError as e:
            raise ApiError(409, str(e), "run") from None
        try:
            cand = pick_candidate(doc["candidates"], candidate_id=candidate, budgets=budgets)
        except UserError as e:
            raise ApiError(422, str(e).replace("--id", "candidate").replace("--max-macs", "max_macs")
                           .replace("--max-params", "max_params"), "candidate" if budgets == {} else "max_macs") from None
        stem = f"candidate-{cand['id']}" + ("-weights" if with_weights else "")
        out = p / "exports" / (stem + EXPORT_FORMATS[fmt])
        if fmt == "json":
            save_spec(candidate_spec(run.space, cand, doc, p), out)
        else:
            cmd = ["export", str(p), "--id", str(cand["id"]), "-o", str(out), "--format", fmt, "--json"]
            if with_weights:
                cmd.append("--with-weights")
            _run_cli(cmd, runs, json_out=True)
        return cand, out

    @app.get("/api/runs/{name}/export")
    def export(name: str, candidate: int | None = Query(None, ge=0),
               max_macs: str | None = None, max_params: str | None = None,
               format: Literal["json", "onnx", "torchscript"] = "json", with_weights: bool = False):
        """Download a candidate (by id, or the best under a budget) as a spec JSON, ONNX or TorchScript;
        the file is also kept in RUN/exports/."""
        p = run_path(name)
        run = open_run_(p)
        if with_weights and format == "json":
            raise ApiError(422, "with_weights needs format onnx or torchscript", "with_weights")
        cand, f = export_spec(p, run, candidate, budgets_of(run.space, max_macs, max_params), format, with_weights)
        media = "application/json" if format == "json" else "application/octet-stream"
        return FileResponse(f, media_type=media, filename=f"{name}-{f.name}",
                            headers={"X-Metaprune-Candidate": str(cand["id"]), "X-Metaprune-Macs": str(cand["macs"])})

    @app.get("/api/runs/{name}/report")
    def report(name: str):
        """Scratch-training results (the JSON of ``metaprune report --json``, without the plot)."""
        from ..training.report import kendall
        from ..training.results import read_results

        p = run_path(name)
        try:
            rows = read_results(p)
        except UserError as e:
            raise ApiError(409, str(e), "run") from None
        if not rows:
            raise ApiError(404, f"run {name!r} has no scratch-training results yet", "run")
        return {"results": rows, "kendall": kendall(rows)}

    # ---- jobs and events ---------------------------------------------------------------------------
    @app.get("/api/jobs")
    def list_jobs(run: str | None = None, state: str | None = None, limit: int = Query(100, ge=1, le=1000)):
        states = None
        if state is not None:
            states = tuple(s for s in state.split(",") if s)
            bad = [s for s in states if s not in ("queued", "running", *FINAL)]
            if bad:
                raise ApiError(422, f"state={bad[0]!r} is not accepted; accepted: queued, running, "
                                    f"{', '.join(FINAL)}", "state")
        return {"jobs": [public_job(j) for j in db.jobs(run=run, states=states, limit=limit)]}

    @app.get("/api/jobs/{job_id}")
    def show_job(job_id: int, log_lines: int = Query(40, ge=0, le=1000)):
        job = public_job(job_or_404(job_id))
        job["log"] = prog.tail_lines(jobs.log_path(job_id))[-log_lines:] if log_lines else []
        ev = db.events(job=job_id, limit=100_000)
        job["progress"] = next((e["data"] for e in reversed(ev) if e["type"] == "progress"), None)
        return job

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: int):
        job = job_or_404(job_id)
        if job["state"] not in ("queued", "running"):
            raise ApiError(409, f"job {job_id} is {job['state']}; only queued or running jobs can be cancelled",
                           "job")
        return public_job(jobs.cancel(job_id))

    @app.post("/api/jobs/{job_id}/resume", status_code=202)
    def resume_job(job_id: int):
        """Continue an interrupted, cancelled or failed job from its stage's last checkpoint (a new job)."""
        job = job_or_404(job_id)
        if job["state"] not in ("interrupted", "cancelled", "failed"):
            raise ApiError(409, f"job {job_id} is {job['state']}; accepted: an interrupted, cancelled or failed "
                                "job", "job")
        p = runs / job["run"]
        if not prog.is_run(p):
            raise ApiError(409, f"job {job_id} never created its run; start it again instead", "job")
        not_busy(job["run"])
        new = jobs.submit(job["kind"], job["run"], job["params"], resume_argv(job["kind"], p), resumes=job_id)
        return public_job(new)

    @app.get("/api/events")
    def events(after: int = Query(0, ge=0), job: int | None = None, limit: int = Query(500, ge=1, le=5000)):
        """Events after id ``after`` (polling fallback of the stream)."""
        ev = db.events(after=after, job=job, limit=limit)
        return {"events": ev, "last": ev[-1]["id"] if ev else after}

    @app.get("/api/events/stream")
    async def stream(request: Request, after: int = Query(0, ge=0), job: int | None = None,
                     max_s: float = Query(3600, gt=0, le=86400)):
        """Server-sent events: one ``data:`` per event (id = event id), a comment every 15 s."""
        async def gen():
            last, t0, ping = after, time.monotonic(), time.monotonic()
            yield "retry: 2000\n\n"
            while time.monotonic() - t0 < max_s:
                if await request.is_disconnected():
                    return
                ev = await asyncio.to_thread(db.events, last, job, 500)
                for e in ev:
                    last = e["id"]
                    yield f"id: {e['id']}\ndata: {json.dumps(e)}\n\n"
                if time.monotonic() - ping > 15:
                    ping = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.5)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


def _run_cli(args: list[str], cwd: Path, json_out: bool = False, timeout: float = EXPORT_TIMEOUT_S) -> Any:
    """Run a short ``metaprune`` command in a subprocess (one torch thread); its one-line error -> 422."""
    import os

    env = dict(os.environ, METAPRUNE_MAX_THREADS="1", OMP_NUM_THREADS="1", RAY_USAGE_STATS_ENABLED="0")
    try:
        r = subprocess.run([sys.executable, "-m", "metaprune", *args], cwd=str(cwd), env=env, capture_output=True,
                           text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise ApiError(504, f"`metaprune {args[0]}` took longer than {timeout:.0f} s", None) from None
    if r.returncode != 0:
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        msg = next((ln for ln in reversed(lines) if ln.startswith("metaprune: error: ")), lines[-1] if lines else "")
        raise ApiError(422 if r.returncode == 2 else 500, msg.replace("metaprune: error: ", "") or
                       f"`metaprune {args[0]}` failed with code {r.returncode}", None)
    return json.loads(r.stdout) if json_out else r.stdout


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("metaprune")
    except Exception:  # noqa: BLE001
        return "0"
