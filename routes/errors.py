"""Every failure leaves as the body OpenAI sends, with the status a client can act on.

Errors raised anywhere in the graph arrive here as `ServiceError`s carrying
their status; FastAPI's own refusals (schema, unknown route, wrong method) are
rewritten into the same shape, and anything unexpected is a 500 that says
what happened rather than a bare stack trace.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from protocol.errors import ServiceError
from protocol.openai import ErrorInfo, ErrorResponse

log = logging.getLogger(__name__)

# What a generating route may answer besides 200, for the OpenAPI document.
ERROR_STATUSES = (400, 401, 404, 413, 429, 500, 503, 504)
ERROR_RESPONSES = {status: {"model": ErrorResponse} for status in ERROR_STATUSES}


def error_body(error: ServiceError) -> ErrorResponse:
    info = ErrorInfo(message=error.message, type=error.type, param=error.param, code=error.code)
    return ErrorResponse(error=info)


def error_response(error: ServiceError, request_id: str) -> JSONResponse:
    headers = {"x-request-id": request_id}
    if error.status in (429, 503):
        headers["retry-after"] = "1"
    return JSONResponse(error_body(error).model_dump(), status_code=error.status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError) -> JSONResponse:
        return error_response(exc, request.state.request_id)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        loc = [str(p) for p in first.get("loc", ()) if p != "body"]
        return error_response(
            ServiceError(
                f"{'.'.join(loc) or 'body'}: {first.get('msg')}",
                status=400,
                type="invalid_request_error",
                param=".".join(loc) or None,
            ),
            request.state.request_id,
        )

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Starlette's own refusals (unknown route, wrong method, unparsable body)."""
        return error_response(
            ServiceError(
                f"{request.method} {request.url.path}: {exc.detail}",
                status=exc.status_code,
                type="invalid_request_error",
            ),
            request.state.request_id,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error answering %s", request.url.path)
        return error_response(
            ServiceError(f"internal error: {type(exc).__name__}: {exc}"),
            getattr(request.state, "request_id", ""),
        )
