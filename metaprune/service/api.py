"""The HTTP API and web page of ``metaprune serve`` (FastAPI).

The run directories under the runs directory stay the source of truth; this module reads them (as
untrusted data: :mod:`.files`, :mod:`.progress`), and changes them only through jobs (subprocesses
of the ``metaprune`` commands) and POST requests. No GET route writes a file or starts a process.
Clients name configs by shipped name and runs, jobs and candidates by id: no paths, no commands.

Errors are JSON ``{"error": ONE LINE, "field": NAME|null}``: 401 without the token, 403 for a
foreign Host/Origin, 404 for an unknown run/job/space, 405 for a wrong method, 409 for a conflict (a
run busy with a job, every job slot taken, a name taken, a damaged run), 413 for a body over 64 KiB,
414 for a query over 4 KiB, 422 for a bad value (naming the field and what is accepted, also when
an answer would exceed its size limit). A rejected request changes nothing in the runs directory.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from pruningnet.errors import UserError

from . import progress as prog
from .db import ACTIVE, FINAL, Database, RunBusy
from .files import Damaged, is_real_dir, open_regular, read_json, read_yaml
from .jobs import LOG_DIR, JobManager, SlotsBusy, resume_argv
from .security import (LEGACY_COOKIE, LOOPBACK_HOSTS, MAX_BODY_BYTES, SECURITY_HEADERS, ServerLock,
                       cross_site_reason, host_name, own_origins, token_ok)
from .validation import (MAX_ID, NAME_RE, SERVICE_MODEL_MODULES, ApiError, check_name, check_overrides,
                         check_space_name, check_space_options, query_value, short)

STATIC = Path(__file__).resolve().parent / "static"
EXPORT_FORMATS = {"json": ".json", "onnx": ".onnx", "torchscript": ".pt"}
EXPORT_TIMEOUT_S = 600
MAX_RESPONSE_BYTES = 16 << 20  # any JSON answer; an export file is streamed (up to MAX_EXPORT_BYTES)
MAX_SPACE_RESPONSE_BYTES = 1 << 20
MAX_EXPORT_BYTES = 1 << 30
MAX_QUERY_BYTES = 4096
MAX_RUNS_LISTED = 1000
MAX_MESSAGE = 400
PUBLIC_PATHS = ("/", "/docs", "/openapi.json", "/favicon.ico")
SERVICE_FILES = ("service.sqlite3", "service.sqlite3-wal", "service.sqlite3-shm", "service.sqlite3-journal")
JobId = Annotated[int, PathParam(ge=1, le=MAX_ID)]


def _err(status: int, message: str, field: str | None = None) -> JSONResponse:
    line = " ".join(str(message).split())
    if len(line) > MAX_MESSAGE:
        line = line[: MAX_MESSAGE - 3] + "..."
    return JSONResponse({"error": line, "field": field[:100] if field else field}, status_code=status)


def _finite(v: Any) -> Any:
    """NaN and infinities (which JSON cannot carry) become ``null``."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


class BoundedJSON(JSONResponse):
    """JSON with non-finite numbers as ``null`` and at most ``MAX_RESPONSE_BYTES``."""

    limit = MAX_RESPONSE_BYTES

    def render(self, content: Any) -> bytes:
        body = json.dumps(_finite(content), ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
        if len(body) > self.limit:
            raise ApiError(422, f"the answer would be {len(body):,} bytes; accepted: at most {self.limit:,} (ask "
                                "for less: candidates=false, a smaller limit)", "response")
        return body


StrictId = Annotated[int, Field(ge=0, le=MAX_ID, strict=True)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class MetaTrainRequest(_Body):
    name: str = Field(max_length=64, description="New run's name (a directory under the runs directory): letters, "
                                                 "digits, '.', '_', '-', at most 64 characters.")
    config: str = Field("smoke", max_length=64, description="A shipped meta-training config (GET /api/configs).")
    overrides: dict[str, Any] = Field(
        default_factory=dict, description="Config keys, e.g. {\"train.epochs\": 2}; numbers within the ranges of "
                                          "metaprune.service.validation.OVERRIDE_RANGES (e.g. train.epochs 1..10000).")


Count = str | int | None  # checked by parse_count: 1 to 1000T


class SearchRequest(_Body):
    config: str | None = Field(None, max_length=64, description="A shipped search config [default: MetaPruning's "
                                                                "search].")
    strategy: Literal["constrained", "pareto"] | None = None
    max_macs: Count = Field(None, description="MACs budget (the papers' FLOPs), e.g. 150M, 1.2G.")
    max_params: Count = Field(None, description="Parameter budget, e.g. 2M.")
    max_latency_ms: float | None = Field(None, gt=0, le=1e6, description="Latency budget in ms (needs the run's "
                                                                         "latency table).")
    objectives: list[Literal["macs", "params", "latency_ms"]] | None = Field(None, max_length=3)
    overrides: dict[str, Any] = Field(default_factory=dict,
                                      description="Search config keys, e.g. {\"generations\": 5} (ranges as for "
                                                  "POST /api/runs).")
    overwrite: bool = Field(False, strict=True, description="Replace the run's existing search.")


class TrainRequest(_Body):
    candidate: StrictId | None = Field(None, description="Candidate id of the run's search.")
    max_macs: Count = Field(None, description="Or: the best candidate under this MACs budget.")
    max_params: Count = None
    recipe: str = Field("smoke", max_length=64, description="A shipped training recipe (GET /api/configs).")
    seeds: int = Field(1, ge=1, le=20, strict=True)
    epochs: int | None = Field(None, ge=1, le=10_000, strict=True)
    budget: Literal["scratch-e", "scratch-b"] = "scratch-e"


class ExportRequest(_Body):
    candidate: StrictId | None = Field(None, description="Candidate id of the run's search.")
    max_macs: Count = Field(None, description="Or: the best candidate under this MACs budget.")
    max_params: Count = None
    format: Literal["json", "onnx", "torchscript"] = "json"
    with_weights: bool = Field(False, strict=True, description="onnx/torchscript: the PruningNet's generated "
                                                               "weights instead of a random init.")


class BaselinesRequest(_Body):
    count: int = Field(3, ge=1, le=20, strict=True, description="Uniform-width networks to score.")


def _field_of(loc: tuple) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    # a union's member names (``int``, ``constrained-int``) are not fields
    parts = [p for p in parts if not (p in ("str", "int", "float", "bool", "list[...]", "function-after[...]")
                                      or p.startswith(("constrained-", "literal[", "function-")))]
    return ".".join(parts) or "body"


def _set_args(overrides: dict) -> list[str]:
    out = []
    for k, v in overrides.items():
        out += ["--set", f"{k}={json.dumps(v)}"]  # JSON is YAML: the CLI's --set reads it back
    return out


def _shipped(kind: str, name: str, field: str) -> Path:
    from ..config import CONFIG_ROOT, shipped_configs

    names = shipped_configs(kind)
    if name not in names:
        raise ApiError(422, f"{field}={short(name)} is not a shipped config; accepted: {', '.join(names)}", field)
    return CONFIG_ROOT / kind / f"{name}.yaml"


def _user_error(e: UserError, field: str) -> ApiError:
    return ApiError(422, str(e), field)


def _check_service_files(runs: Path) -> None:
    """The database files and the log directory are the server's: a link or a FIFO planted there by
    someone with write access to the runs directory is refused before anything is opened."""
    for name in SERVICE_FILES:
        try:
            mode = os.lstat(runs / name).st_mode
        except FileNotFoundError:
            continue
        if not stat.S_ISREG(mode):
            raise UserError(f"{str(runs / name)!r} is not a regular file (a link?); the service will not open it: "
                            "remove it (the service's job history is lost)")
    logs = runs / LOG_DIR
    if os.path.lexists(logs) and not is_real_dir(runs, LOG_DIR):
        raise UserError(f"{str(logs)!r} is not a directory (a link?); remove it")


def create_app(runs_dir: str | Path, *, token: str, max_jobs: int = 1, host: str = "127.0.0.1",
               port: int = 8000, extra_hosts: tuple[str, ...] = (), start_jobs: bool = True,
               poll_s: float = 0.5, gpus: int = 0, check_host: bool = True) -> FastAPI:
    """The service app over ``runs_dir``, holding its server lock (:class:`UserError` if another
    server holds it) until shut down; ``extra_hosts`` are further accepted Host names (origins
    ``http://NAME:port``); ``check_host=False`` (a wildcard bind with ``--allow-remote``) accepts any
    Host, the token still being required and an Origin having to match the Host."""
    runs = Path(runs_dir).resolve()
    runs.mkdir(parents=True, exist_ok=True)
    lock = ServerLock(runs).acquire()
    try:
        _check_service_files(runs)
        db = Database(runs / "service.sqlite3")
    except BaseException:
        lock.release()
        raise
    jobs = JobManager(runs, db, max_jobs, poll_s=poll_s, gpus=gpus)
    allowed_hosts = {*LOOPBACK_HOSTS, host, *extra_hosts}
    origins = own_origins(allowed_hosts, port) if check_host else None
    baseline_cache: dict[tuple, list] = {}
    space_cache: dict[tuple, Any] = {}
    cache_lock = threading.Lock()

    from contextlib import asynccontextmanager

    @asynccontextmanager
    async def lifespan(app):
        if start_jobs:
            jobs.start()
        try:
            yield
        finally:
            jobs.stop(kill=True)
            db.close()
            lock.release()

    app = FastAPI(title="metaprune", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  default_response_class=BoundedJSON,
                  description="Channel search under MACs budgets (MACs: multiply-accumulates of conv and "
                              "linear layers, BN folded; the pruning papers' \"FLOPs\"). Every /api route needs "
                              "the token of the runs directory's `service-token` file as `Authorization: "
                              "Bearer TOKEN`.")
    app.state.db, app.state.jobs, app.state.runs_dir, app.state.lock = db, jobs, runs, lock

    # ---- security middleware ---------------------------------------------------------------------
    @app.middleware("http")
    async def guard(request: Request, call_next):
        resp = await _guarded(request, call_next)
        for k, v in SECURITY_HEADERS.items():
            resp.headers.setdefault(k, v)
        if request.url.path.startswith("/api/"):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    async def _guarded(request: Request, call_next):
        h = host_name(request.headers.get("host"))
        if check_host and h not in allowed_hosts:
            return _err(403, f"Host {short(request.headers.get('host'), 80)} is not this server; accepted: "
                             f"{', '.join(sorted(allowed_hosts))}", "Host")
        if len(request.url.query) > MAX_QUERY_BYTES:
            return _err(414, f"the query is {len(request.url.query):,} bytes; accepted: at most {MAX_QUERY_BYTES}",
                        "query")
        length = request.headers.get("content-length")
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            if length is None and request.headers.get("transfer-encoding"):
                return _err(411, "a request body needs a Content-Length", "Content-Length")
            if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
                return _err(413, f"request body of {short(length, 20)} bytes is too large; accepted: at most "
                                 f"{MAX_BODY_BYTES} bytes", "body")
        why = cross_site_reason(request.method, request.headers, origins, request.headers.get("host"))
        if why is not None:
            own = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
            return _err(403, f"{why} may not change state here; accepted: requests from this server's own page "
                             f"(Origin {own}) or from clients that send no Origin", "Origin")
        path = request.url.path
        if path in PUBLIC_PATHS or path.startswith("/static/"):
            # the page and its assets hold no data: they load without the token, which the page then
            # sends itself; a wrong ?token= is still refused
            q_token = request.query_params.get("token")
            if path == "/" and q_token is not None and not token_ok(q_token, token):
                return _err(401, "token is wrong; accepted: the one in the runs directory's service-token file "
                                 "(printed by `metaprune serve`)", "token")
            resp = await call_next(request)
            if path == "/" and LEGACY_COOKIE in request.cookies:
                resp.delete_cookie(LEGACY_COOKIE, path="/")  # older servers set it; every local port saw it
            return resp
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-metaprune-token")
        if not token_ok(given, token):
            extra = (" (a cookie is not accepted: a browser sends it to every port of this host)"
                     if LEGACY_COOKIE in request.cookies else "")
            return _err(401, "missing or wrong token; send 'Authorization: Bearer TOKEN' (TOKEN is in the runs "
                             "directory's service-token file) or open /?token=TOKEN in the browser" + extra, "token")
        return await call_next(request)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, e: ApiError):
        return _err(e.status, e.message, e.field)

    @app.exception_handler(RunBusy)
    async def run_busy(request: Request, e: RunBusy):
        j = e.job
        what = f"job {j['id']} ({j['kind']}, {j['state']})" if j else "another request"
        return _err(409, f"run {short(request.path_params.get('name') or (j or {}).get('run'), 70)} is busy with "
                         f"{what}; one job per run at a time: wait for it or cancel it", "name")

    @app.exception_handler(SlotsBusy)
    async def slots_busy(request: Request, e: SlotsBusy):
        return _err(409, f"all {e.max_jobs} job slot(s) are busy (`metaprune serve --jobs`); try again when a job "
                         "has finished", "jobs")

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
        elif first.get("type") == "finite_number":
            msg = "not accepted; accepted: a finite number"
        return _err(422, f"{field}: {msg}", field)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, e: StarletteHTTPException):
        return _err(e.status_code, str(e.detail), None)

    @app.exception_handler(Exception)
    async def bug(request: Request, e: Exception):  # a bug: one line, never a traceback
        print(f"metaprune serve: {request.method} {request.url.path}: {type(e).__name__}: {e}", file=sys.stderr)
        return _err(500, f"internal error ({type(e).__name__}); the server log has the details", None)

    # ---- helpers ---------------------------------------------------------------------------------
    def run_path(name: str) -> Path:
        if not NAME_RE.match(name or ""):
            raise ApiError(404, f"run {short(name)} not found", "run")
        p = runs / name
        if not prog.looks_like_run(p):
            raise ApiError(404, f"run {name!r} not found; GET /api/runs lists the runs", "run")
        return p

    def job_or_404(job_id: int) -> dict:
        job = db.job(job_id)
        if job is None:
            raise ApiError(404, f"job {job_id} not found; GET /api/jobs lists the jobs", "job")
        return job

    def public_job(job: dict) -> dict:
        out = {k: job[k] for k in ("id", "kind", "run", "params", "state", "threads", "pid", "created", "started",
                                   "ended", "exit_code", "error", "resumes")}
        out["command"] = "metaprune " + " ".join(job["argv"])
        return out

    def run_space(p: Path):
        """The run's space, from its space.json read safely (cached by the file's identity)."""
        from pruningnet import get_space

        try:
            st = os.lstat(p / "space.json")
            key = (str(p), st.st_ino, st.st_mtime_ns, st.st_size)
            with cache_lock:
                if key in space_cache:
                    return space_cache[key]
            doc = read_json(p, "space.json", 1 << 20)
            if not isinstance(doc, dict) or not isinstance(doc.get("space"), str) or \
                    not isinstance(doc.get("options"), dict):
                raise Damaged("space.json is not {\"space\": NAME, \"options\": {...}}")
            opts = {k: v for k, v in doc["options"].items() if k not in ("in_channels", "num_classes", "input_size")}
            check_space_options(opts, "space.json: ")
            for k in ("in_channels", "num_classes", "input_size"):
                if k in doc["options"]:
                    check_space_options({k: doc["options"][k]}, "space.json: ")
            sp = get_space(doc["space"], **doc["options"])
        except (OSError, Damaged, UserError, ApiError, TypeError, ValueError) as e:
            msg = e.message if isinstance(e, ApiError) else str(e)
            raise ApiError(409, f"run {p.name!r} is damaged: {msg}", "run") from None
        with cache_lock:
            if len(space_cache) > 256:
                space_cache.clear()
            space_cache[key] = sp
        return sp

    def precheck(p: Path, names: tuple[str, ...]) -> None:
        """The run files a subprocess will read are regular files (else 409, before it can hang)."""
        for n in names:
            try:
                fd = open_regular(p, n)
            except Damaged as e:
                raise ApiError(409, f"run {p.name!r} is damaged: {e}", "run") from None
            if fd is not None:
                os.close(fd)

    def budgets_of(space, max_macs=None, max_params=None, lat: float | None = None) -> dict:
        """Budgets from request fields (``150M``, ``1.2G`` or integers); 422 naming the field."""
        from ..units import parse_count

        given = {"max_macs": max_macs, "max_params": max_params}
        out = {}
        for key, field in (("macs", "max_macs"), ("params", "max_params")):
            if given[field] is None:
                continue
            if isinstance(given[field], str) and len(given[field]) > 32:
                raise ApiError(422, f"{field} is {len(given[field])} characters; accepted: a count such as 150M",
                               field)
            try:
                out[key] = parse_count(given[field], field)
            except UserError as e:
                raise _user_error(e, field) from None
        if lat is not None:
            if not (math.isfinite(lat) and 0 < lat <= 1e6):
                raise ApiError(422, f"max_latency_ms={lat!r} is not accepted; accepted: a positive number "
                                    "of ms up to 1e6", "max_latency_ms")
            out["latency_ms"] = float(lat)
        if out:
            from pruningnet.cost import cost_model

            cm = cost_model(space)
            lo = space.min_channels()
            smallest = {"macs": int(cm.macs(lo)[0]), "params": int(cm.params(lo)[0])}
            for key, field in (("macs", "max_macs"), ("params", "max_params")):
                if key in out and out[key] < smallest[key]:
                    raise ApiError(422, f"{field}={short(given[field])} is below the smallest network of "
                                        f"space {space.name} ({smallest[key]:,}); accepted: at least that",
                                   field)
        return out

    def search_of(p: Path) -> tuple[dict, list[dict], int]:
        try:
            return prog.read_search(p)
        except FileNotFoundError:
            raise ApiError(404, f"run {p.name!r} has no search yet; start one (POST /api/runs/{p.name}/searches)",
                           "run") from None
        except Damaged as e:
            raise ApiError(409, f"run {p.name!r} has a damaged search: {e}", "run") from None

    def exports_dir(p: Path) -> Path:
        d = p / "exports"
        if os.path.lexists(d) and not is_real_dir(p, "exports"):
            raise ApiError(409, f"run {p.name!r} is damaged: exports is not a directory (a link?)", "run")
        d.mkdir(exist_ok=True)
        return d

    # ---- page and static ---------------------------------------------------------------------------
    index_html = (STATIC / "index.html").read_bytes()

    @app.get("/", include_in_schema=False)
    def index():
        return Response(index_html, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon():
        return Response(status_code=204)

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/docs", include_in_schema=False)
    def docs():
        """The OpenAPI page, with Swagger UI served from this server (no CDN, no inline script)."""
        return HTMLResponse(_DOCS_HTML)

    def openapi_with_bearer():
        if app.openapi_schema is None:
            from fastapi.openapi.utils import get_openapi

            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schema.setdefault("components", {})["securitySchemes"] = {"token": {"type": "http", "scheme": "bearer"}}
            schema["security"] = [{"token": []}]
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi_with_bearer

    # ---- spaces and configs ------------------------------------------------------------------------
    @app.get("/api/spaces")
    def spaces():
        from pruningnet import list_spaces

        from ..spaces_summary import space_summary

        return {"spaces": [{"name": n, "summary": space_summary(n)} for n in list_spaces("*")],
                "models": {"name": "model:MODULE:CALLABLE", "modules": list(SERVICE_MODEL_MODULES),
                           "summary": space_summary("model:torchvision.models:resnet18")}}

    @app.get("/api/spaces/{name}")
    def space(name: str, request: Request):
        """One space with its units and cost range; query parameters are space options within
        ``SPACE_OPTION_RANGES`` (e.g. ``?input_size=32&small_input=true&num_classes=10``; input_size
        8..1024, width_mult up to 4, at most 256 ratios). ``model:torchvision.models:CALLABLE`` names
        a traced torchvision model."""
        from ..spaces_summary import space_info

        check_space_name(name)
        items = request.query_params.multi_items()
        if len(items) > 16:
            raise ApiError(422, f"{len(items)} options given; accepted: at most 16", "options")
        options: dict[str, Any] = {}
        for k, v in items:
            if k in options:
                raise ApiError(422, f"option {short(k)} is given twice; accepted: once", k[:60])
            options[k] = query_value(k[:60], v)
        check_space_options(options)
        try:
            info = space_info(name, options)
        except (UserError, TypeError, ValueError) as e:
            raise ApiError(422, f"space {name}: {e}", "options") from None
        size = prog.json_size(info)
        if size > MAX_SPACE_RESPONSE_BYTES:
            raise ApiError(422, f"space {name} with these options would be a {size:,}-byte answer; accepted: at most "
                                f"{MAX_SPACE_RESPONSE_BYTES:,} (fewer ratios or units)", "options")
        return info

    @app.get("/api/configs")
    def configs():
        from ..config import shipped_configs

        return {"meta_train": shipped_configs(""), "search": shipped_configs("search"),
                "train": shipped_configs("train")}

    # ---- runs ----------------------------------------------------------------------------------------
    def summary_of(p: Path, active: dict | None) -> dict:
        try:
            s = prog.run_summary(p)
        except Exception as e:  # noqa: BLE001 - one damaged run never breaks the others
            s = prog.damaged_summary(p, f"{type(e).__name__}: {e}")
        last = db.jobs(run=p.name, limit=1)
        prog.settle_meta_state(s, p, active, last[0] if last else None)
        s["active_job"] = public_job(active) if active else None
        return s

    @app.get("/api/runs")
    def list_runs():
        """Every run (at most 1000, newest first); a run whose files are damaged is listed with
        ``damaged``: a one-line reason."""
        active = {}
        for j in db.jobs(states=ACTIVE, limit=10_000):  # newest first: the run's current job wins
            active.setdefault(j["run"], j)
        found = []
        with os.scandir(runs) as it:
            for entry in it:
                if NAME_RE.match(entry.name) and entry.is_dir(follow_symlinks=False) and \
                        prog.looks_like_run(runs / entry.name):
                    try:
                        found.append((entry.stat(follow_symlinks=False).st_mtime, entry.name))
                    except OSError:
                        continue
                if len(found) >= 10 * MAX_RUNS_LISTED:
                    break
        found.sort(key=lambda t: (-t[0], t[1]))
        return {"runs": [summary_of(runs / n, active.get(n)) for _, n in found[:MAX_RUNS_LISTED]]}

    @app.get("/api/runs/{name}")
    def show_run(name: str):
        p = run_path(name)
        active = jobs.active_for_run(name)
        s = summary_of(p, active)
        try:
            s["config"] = prog.plain(read_yaml(p, "config.yaml"))
        except Damaged as e:
            s["config"] = None
            s["damaged"] = s.get("damaged") or str(e)
        s["curve"] = prog.metrics_curve(p)
        s["jobs"] = [public_job(j) for j in db.jobs(run=name, limit=50)]
        exports = []
        if is_real_dir(p, "exports"):
            with os.scandir(p / "exports") as it:
                for entry in it:
                    if NAME_RE.match(entry.name) and entry.is_file(follow_symlinks=False):
                        exports.append(entry.name)
                    if len(exports) >= 200:
                        break
        s["exports"] = sorted(exports)
        return s

    @app.post("/api/runs", status_code=202)
    def start_meta_training(req: MetaTrainRequest):
        """Meta-train a new run from a shipped config plus overrides (a job)."""
        from ..config import load_config
        from ..metatrain.config import MetaTrainConfig

        name = check_name(req.name)
        path = _shipped("", req.config, "config")
        overrides = check_overrides(req.overrides)
        try:
            load_config(MetaTrainConfig, path, overrides)
        except UserError as e:
            raise _user_error(e, "overrides") from None
        target = runs / name
        taken = ApiError(409, f"name={name!r} is taken (a run or a job of that name exists); accepted: a new name",
                         "name")
        if os.path.lexists(target) or name in SERVICE_FILES or name == LOG_DIR:
            raise taken
        argv = ["train-pruningnet", "-c", str(path), "--run-dir", str(target), "--quiet", *_set_args(overrides)]
        try:
            job = jobs.submit("meta-train", name, req.model_dump(), argv, new_run=True)
        except RunBusy:
            raise taken from None
        return public_job(job)

    @app.post("/api/runs/{name}/searches", status_code=202)
    def start_search(name: str, req: SearchRequest):
        """Search a meta-trained run's PruningNet under budgets (a job; one job per run at a time)."""
        from ..config import load_config
        from ..search.config import SearchConfig

        p = run_path(name)
        space = run_space(p)
        if not prog.exists_regular(p, "pruningnet.pt"):
            raise ApiError(409, f"run {name!r} has no trained PruningNet yet; meta-train it first", "run")
        budgets = budgets_of(space, req.max_macs, req.max_params, req.max_latency_ms)
        path = _shipped("search", req.config, "config") if req.config else None
        overrides = check_overrides(req.overrides)
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
        active = jobs.active_for_run(name)
        if active is not None:
            raise RunBusy(active)
        if os.path.lexists(p / "search" / "front.json") and not req.overwrite:
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
        space = run_space(p)
        recipe = _shipped("train", req.recipe, "recipe")
        budgets = budgets_of(space, req.max_macs, req.max_params)
        with jobs.reserve(name, slot=False):  # the spec is written under the run's hold
            cand, spec_file = export_spec(p, space, req.candidate, budgets)
            argv = ["train", str(p), "--spec", str(spec_file), "--recipe", str(recipe), "--seeds", str(req.seeds),
                    "--budget", req.budget, "--quiet"]
            if req.epochs is not None:
                argv += ["--epochs", str(req.epochs)]
            params = {**req.model_dump(), "candidate": cand["id"]}
        job = jobs.submit("train", name, params, argv)
        return public_job(job)

    # ---- search results ----------------------------------------------------------------------------
    @app.get("/api/runs/{name}/front")
    def front(name: str, candidates: bool = True):
        """The Pareto front (the JSON of ``metaprune pareto --json``), every candidate when
        ``candidates``, and the uniform baselines if ``POST .../baselines`` scored them for this front.
        Records with a wrong type are left out and counted in ``damaged_records``."""
        p = run_path(name)
        doc, cands, bad = search_of(p)
        out = {"run": name, **{k: doc[k] for k in ("strategy", "budgets", "objectives", "generation", "finished")},
               "front": doc["front"], "baselines": [], "damaged_records": bad}
        if candidates:
            out["candidates"] = cands
        try:
            key = (name, os.lstat(p / "search" / "front.json").st_mtime_ns)
        except OSError:
            key = None
        with cache_lock:
            got = [v for k, v in baseline_cache.items() if k[:2] == key]
        if got:
            out["baselines"] = got[-1]
        return out

    @app.post("/api/runs/{name}/baselines")
    def baselines(name: str, req: BaselinesRequest | None = None):
        """Score ``count`` uniform-width networks with the run's PruningNet (``metaprune pareto
        --baselines``, a process in one job slot; cached per front)."""
        req = req or BaselinesRequest()
        p = run_path(name)
        run_space(p)  # a damaged run is refused here, before a process is started for it
        search_of(p)
        precheck(p, ("config.yaml", "space.json", "split.json", "pruningnet.pt", "search/front.json",
                     "search/candidates.json"))
        key = (name, os.lstat(p / "search" / "front.json").st_mtime_ns, req.count)
        with cache_lock:
            if key in baseline_cache:
                return {"run": name, "baselines": baseline_cache[key]}
        with jobs.reserve(name, slot=True):
            doc = _run_cli(["pareto", str(p), "--json", "--baselines", str(req.count), "--device", "cpu"], runs,
                           json_out=True)
        rows = [b for b in (doc.get("baselines") or []) if isinstance(b, dict)]
        with cache_lock:
            if len(baseline_cache) > 256:
                baseline_cache.clear()
            baseline_cache[key] = rows
        return {"run": name, "baselines": rows}

    def export_spec(p: Path, space, candidate: int | None, budgets: dict) -> tuple[dict, Path]:
        """Write the candidate's spec to RUN/exports/candidate-ID.json (in-process; the caller holds the run)."""
        from ..search.export import candidate_spec, pick_candidate
        from ..store.specfile import save_spec

        if (candidate is None) == (not budgets):
            raise ApiError(422, "give either candidate (an id) or a budget (max_macs, max_params), not both "
                                "and not neither", "candidate")
        try:
            doc, cands, _ = prog.read_search(p)
        except FileNotFoundError:
            raise ApiError(409, f"run {p.name!r} has no search yet; start one first", "run") from None
        except Damaged as e:
            raise ApiError(409, f"run {p.name!r} has a damaged search: {e}", "run") from None
        unit_names = [u.name for u in space.units]
        cands = [c for c in cands if list(c["channels"]) == unit_names]
        if not cands:
            raise ApiError(409, f"run {p.name!r} has no candidate of its space's units; rerun the search", "run")
        try:
            cand = pick_candidate(cands, candidate_id=candidate, budgets=budgets)
        except UserError as e:
            raise ApiError(422, str(e).replace("--id", "candidate").replace("--max-macs", "max_macs")
                           .replace("--max-params", "max_params"), "candidate" if not budgets else "max_macs") from None
        out = exports_dir(p) / f"candidate-{cand['id']}.json"
        try:
            spec = candidate_spec(space, cand, doc, p)
        except (UserError, ValueError, KeyError, TypeError) as e:
            raise ApiError(409, f"candidate {cand['id']} of run {p.name!r} does not fit its space: {e}", "candidate") \
                from None
        try:
            with _run_lock(p, "export"):  # a CLI job writing the run (which holds its lock) is not raced
                save_spec(spec, out)
        except UserError as e:
            raise ApiError(409, str(e), "name") from None
        return cand, out

    @app.post("/api/runs/{name}/export")
    def export(name: str, req: ExportRequest):
        """Download a candidate (by id, or the best under a budget) as a spec JSON, ONNX or TorchScript;
        the file is also kept in RUN/exports/. ONNX and TorchScript are written by a process in one
        job slot; every export needs the run idle (one writer per run)."""
        p = run_path(name)
        space = run_space(p)
        if req.with_weights and req.format == "json":
            raise ApiError(422, "with_weights needs format onnx or torchscript", "with_weights")
        budgets = budgets_of(space, req.max_macs, req.max_params)
        if req.format != "json":
            precheck(p, ("config.yaml", "space.json", "split.json", "pruningnet.pt", "search/candidates.json"))
        with jobs.reserve(name, slot=req.format != "json"):
            cand, spec_file = export_spec(p, space, req.candidate, budgets)
            f = spec_file
            if req.format != "json":
                stem = f"candidate-{cand['id']}" + ("-weights" if req.with_weights else "")
                f = spec_file.parent / (stem + EXPORT_FORMATS[req.format])
                cmd = ["export", str(p), "--id", str(cand["id"]), "-o", str(f), "--format", req.format, "--json"]
                if req.with_weights:
                    cmd.append("--with-weights")
                _run_cli(cmd, runs, json_out=True)
            try:
                fd = open_regular(p, f"exports/{f.name}")
            except Damaged as e:
                raise ApiError(409, f"run {name!r} is damaged: {e}", "run") from None
        if fd is None:
            raise ApiError(409, f"the export of candidate {cand['id']} was not written", "run")
        size = os.fstat(fd).st_size
        if size > MAX_EXPORT_BYTES:
            os.close(fd)
            raise ApiError(422, f"the export is {size:,} bytes; accepted: at most {MAX_EXPORT_BYTES:,}", "format")
        media = "application/json" if req.format == "json" else "application/octet-stream"
        return StreamingResponse(_stream_fd(fd), media_type=media, headers={
            "Content-Disposition": f'attachment; filename="{name}-{f.name}"', "Content-Length": str(size),
            "X-Metaprune-Candidate": str(cand["id"]), "X-Metaprune-Macs": str(cand["macs"])})

    @app.get("/api/runs/{name}/report")
    def report(name: str):
        """Scratch-training results (the JSON of ``metaprune report --json``, without the plot)."""
        from ..training.report import kendall

        p = run_path(name)
        try:
            doc = read_json(p, "train/results.json")
        except Damaged as e:
            raise ApiError(409, f"run {name!r} has damaged results: {e}", "run") from None
        rows = doc.get("results") if isinstance(doc, dict) else None
        if doc is not None and not isinstance(rows, list):
            raise ApiError(409, f"run {name!r} has damaged results: train/results.json has no results list", "run")
        rows = [r for r in (prog.clean_result(x) for x in (rows or [])[:10_000]) if r is not None]
        if not rows:
            raise ApiError(404, f"run {name!r} has no scratch-training results yet", "run")
        try:
            tau = kendall([r for r in rows if prog.num(r.get("proxy_top1")) is not None
                           and prog.num(r.get("test_top1")) is not None])
        except (TypeError, ValueError):
            tau = {"tau": None, "n": 0}
        return {"results": rows, "kendall": tau}

    # ---- jobs and events ---------------------------------------------------------------------------
    @app.get("/api/jobs")
    def list_jobs(run: str | None = Query(None, max_length=64), state: str | None = Query(None, max_length=100),
                  limit: int = Query(100, ge=1, le=1000)):
        states = None
        if state is not None:
            states = tuple(s for s in state.split(",") if s)
            bad = [s for s in states if s not in ("queued", "running", *FINAL)]
            if bad:
                raise ApiError(422, f"state={short(bad[0])} is not accepted; accepted: queued, running, "
                                    f"{', '.join(FINAL)}", "state")
        return {"jobs": [public_job(j) for j in db.jobs(run=run, states=states, limit=limit)]}

    @app.get("/api/jobs/{job_id}")
    def show_job(job_id: JobId, log_lines: int = Query(40, ge=0, le=1000)):
        job = public_job(job_or_404(job_id))
        job["log"] = [ln[:500] for ln in prog.tail_lines(jobs.log_path(job_id))[-log_lines:]] if log_lines else []
        job["progress"] = db.last_event(job_id, "progress")
        return job

    @app.post("/api/jobs/{job_id}/cancel")
    def cancel_job(job_id: JobId):
        job = job_or_404(job_id)
        if job["state"] not in ("queued", "running"):
            raise ApiError(409, f"job {job_id} is {job['state']}; only queued or running jobs can be cancelled",
                           "job")
        return public_job(jobs.cancel(job_id))

    @app.post("/api/jobs/{job_id}/resume", status_code=202)
    def resume_job(job_id: JobId):
        """Continue an interrupted, cancelled or failed job from its stage's last checkpoint (a new job)."""
        job = job_or_404(job_id)
        if job["state"] not in ("interrupted", "cancelled", "failed"):
            raise ApiError(409, f"job {job_id} is {job['state']}; accepted: an interrupted, cancelled or failed "
                                "job", "job")
        p = runs / job["run"]
        if not prog.looks_like_run(p):
            raise ApiError(409, f"job {job_id} never created its run; start it again instead", "job")
        new = jobs.submit(job["kind"], job["run"], job["params"], resume_argv(job["kind"], p), resumes=job_id)
        return public_job(new)

    @app.get("/api/events")
    def events(after: int = Query(0, ge=0, le=MAX_ID), job: int | None = Query(None, ge=1, le=MAX_ID),
               limit: int = Query(500, ge=1, le=5000)):
        """Events after id ``after`` (polling fallback of the stream)."""
        ev = db.events(after=after, job=job, limit=limit)
        return {"events": ev, "last": ev[-1]["id"] if ev else after}

    @app.get("/api/events/stream")
    async def stream(request: Request, after: int = Query(0, ge=0, le=MAX_ID),
                     job: int | None = Query(None, ge=1, le=MAX_ID), max_s: float = Query(3600, gt=0, le=86400)):
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
                    yield f"id: {e['id']}\ndata: {json.dumps(_finite(e))}\n\n"
                if time.monotonic() - ping > 15:
                    ping = time.monotonic()
                    yield ": keep-alive\n\n"
                await asyncio.sleep(0.5)

        return StreamingResponse(gen(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return app


_DOCS_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>metaprune API</title>
<link rel="stylesheet" href="/static/vendor/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/static/vendor/swagger-ui-bundle.js"></script>
<script src="/static/docs.js"></script>
</body></html>
"""


def _run_lock(run: Path, job: str):
    """The run's writer lock (:mod:`metaprune.store.runlock`), which every CLI job writing the run holds."""
    try:
        from ..store.runlock import run_lock
    except ImportError:  # pragma: no cover - a build without per-run locks
        import contextlib

        return contextlib.nullcontext()
    return run_lock(run, job)


def _stream_fd(fd: int, chunk: int = 1 << 20):
    try:
        while True:
            b = os.read(fd, chunk)
            if not b:
                return
            yield b
    finally:
        os.close(fd)


def _run_cli(args: list[str], cwd: Path, json_out: bool = False, timeout: float = EXPORT_TIMEOUT_S) -> Any:
    """Run a short ``metaprune`` command in a subprocess (one torch thread); its one-line error -> 422."""
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
    if not json_out:
        return r.stdout
    try:
        return json.loads(r.stdout)
    except ValueError:
        raise ApiError(500, f"`metaprune {args[0]}` did not print JSON", None) from None


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("metaprune")
    except Exception:  # noqa: BLE001
        return "0"
