"""The REST service and the web page: `create_app(settings)`, run by `kgreport serve`.

Routes live in `indexes.py` (build, cases, jobs) and `queries.py` (search, reports, concepts); this
file wires them with what every request shares: the API key check on `/v1`, the body size limit
(`body_limit.py`: 413 from Content-Length, or as a chunked body streams past it), the
JSON error format, the security headers (`security_headers.py`), CORS when `KGREPORT_CORS_ORIGINS` names
origins (off by default), health and readiness, and the static web page at `/`.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse
from fastapi.security import APIKeyHeader
from fastapi.staticfiles import StaticFiles

from kgreport.api.service import indexes, queries, responses
from kgreport.api.service.body_limit import BodyLimit
from kgreport.api.service.errors import ApiError, install_error_handlers
from kgreport.api.service.security_headers import SecurityHeaders
from kgreport.api.service.state import ServiceState, service_state
from kgreport.json_types import JsonObject
from kgreport.retrieval import faiss_gpu
from kgreport.retrieval.device import describe
from kgreport.usecases.services import Services
from kgreport.usecases.settings import Settings

WEB = Path(__file__).resolve().parents[1] / "web"
API_KEY = APIKeyHeader(name="X-API-Key", auto_error=False, description="required when KGREPORT_API_KEYS is set")


async def require_api_key(request: Request, key: Annotated[str | None, Depends(API_KEY)]) -> None:
    """Every `/v1` route's key check (async: no thread hop per request)."""
    keys = service_state(request).settings.api_key_set
    if not keys:
        return
    if not key:
        raise ApiError(401, "missing_api_key", "this server needs an API key in the X-API-Key header")
    if not any(hmac.compare_digest(key.encode(), k.encode()) for k in keys):
        raise ApiError(401, "invalid_api_key", "the X-API-Key header does not hold a valid key")


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(app.state.kgreport.warm_up)
        yield
        app.state.kgreport.close()

    app = FastAPI(
        title="kgreport",
        version="0.1.0",
        summary="Similar-case search and grounded draft reports for CT, MR and X-ray. Research software: "
        "not for clinical use.",
        lifespan=lifespan,
    )
    app.state.kgreport = ServiceState(settings, Services(settings))
    install_error_handlers(app)
    limit = int(settings.max_upload_mb * 1e6) + 64 * 1024  # room for the multipart envelope and form fields

    app.add_middleware(BodyLimit, limit=limit, megabytes=settings.max_upload_mb)
    if settings.cors_origin_list:  # off by default: see Settings.cors_origins
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Content-Type"],
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)  # outermost: every answer carries the headers, errors included

    keyed = [Depends(require_api_key)]
    app.include_router(indexes.router, dependencies=keyed)
    app.include_router(queries.router, dependencies=keyed)

    @app.get(
        "/healthz",
        tags=["health"],
        response_model=responses.Health,
        summary="The process is up (and which worker process answered)",
    )
    async def healthz() -> dict[str, str | int]:
        return {"status": "ok", "worker_pid": os.getpid()}

    @app.get(
        "/readyz",
        tags=["health"],
        response_model=responses.Readiness,
        summary="Models, graph and data dir are usable",
        responses={503: {"model": responses.Readiness}},
    )
    def readyz(request: Request) -> JSONResponse:
        return _readiness(service_state(request))

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    return app


def _readiness(state: ServiceState) -> JSONResponse:
    checks: JsonObject = {}
    try:
        state.settings.data_dir.mkdir(parents=True, exist_ok=True)
        checks["data_dir"] = "ok"
    except OSError as err:
        checks["data_dir"] = f"error: {err}"
    for name, probe in (
        ("image_encoder", lambda: state.services.image_encoder.name),
        ("text_encoder", lambda: state.services.text_encoder.name),
        ("graph", lambda: state.services.graph.run("RETURN 1") and state.services.graph.name),
        ("case_store", lambda: state.services.stores.describe()),
        ("device", lambda: describe(state.services.device)),
        ("vector_search", lambda: faiss_gpu.describe(state.settings.device)),
    ):
        try:
            checks[name] = f"ok ({probe()})"
        except Exception as err:  # readiness reports every failure; it never raises
            checks[name] = f"error: {type(err).__name__}: {err}"
    writer = state.settings.report_generator_dir
    checks["report_writer"] = "ok" if (writer / "generator.json").is_file() else f"missing at {writer} (reports: 503)"
    ready = all(str(v).startswith("ok") for k, v in checks.items() if k != "report_writer")
    return JSONResponse({"ready": ready, "checks": checks}, status_code=200 if ready else 503)
