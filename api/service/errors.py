"""Structured JSON errors: every failure the service answers is `{"error": {"status", "code", "message"}}`.

Domain exceptions from the layers below map to HTTP statuses through the table in `api/error_table.py`
(the CLI reads the same table), so a route never builds an error response by hand and an unexpected
exception is the only thing that can become a 500.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from kgreport.api.error_table import describe, known_errors
from kgreport.api.service.redact import client_text

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error the service answers as is."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "code": code, "message": message}}, status, headers=headers)


def validation_message(errors: Sequence[Mapping[str, Any]]) -> str:
    """Pydantic / FastAPI validation errors as one line: `k: Input should be ...; text: Field required`."""
    parts = []
    for e in errors:
        where = ".".join(str(x) for x in e.get("loc", ()) if x != "body")
        parts.append(f"{where}: {e.get('msg')}" if where else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


def _for_client(request: Request, status: int, code: str, message: str) -> str:
    """The message without server paths; the full one goes to the log."""
    log.info("%s %s -> %s %s: %s", request.method, request.url.path, status, code, message)
    return client_text(message, request.app.state.kgreport.settings)


def install_error_handlers(app: FastAPI) -> None:

    @app.exception_handler(ApiError)
    async def _api(request: Request, err: ApiError) -> JSONResponse:
        return error_response(err.status, err.code, _for_client(request, err.status, err.code, err.message))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, err: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(err.status_code, "http_error")
        return error_response(err.status_code, code, str(err.detail), headers=getattr(err, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, err: RequestValidationError) -> JSONResponse:
        return error_response(422, "invalid_request", validation_message(err.errors()))

    async def known(request: Request, err: Exception) -> JSONResponse:
        status, code = describe(err) or (500, "internal_error")
        return error_response(status, code, _for_client(request, status, code, str(err)))

    # One handler per kind: Starlette picks a handler by the error's MRO, `describe` then the table's order
    # (a class of two kinds answers as the first). A catch-all `Exception` handler would run in the
    # server-error middleware, which re-raises after answering.
    for row in known_errors():
        app.add_exception_handler(row.kind, known)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        # The request may not have been read to its end: close the connection rather than let the client's
        # next request on it find it reset.
        message = f"{type(err).__name__}: the server failed on this request"
        return error_response(500, "internal_error", message, headers={"Connection": "close"})
