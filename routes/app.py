"""The FastAPI app: middleware, error handlers, and one router per API family.

Middleware is added innermost first: the request id wraps everything, CORS
answers preflights before the key is asked for, the body limit acts last.
The API key and body limit are plain ASGI middleware (`http_guards`), so they
act before FastAPI parses anything.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import Response

from routes import chat, health, inference, models, ops, videos
from routes.errors import install_error_handlers
from routes.http_guards import LimitBody, RequireApiKey
from routes.state import FrontendState

log = logging.getLogger(__name__)

# One line per API family; each module has a `router`.
FAMILIES = (chat, models, ops, inference, health, videos)

# A caller's own x-request-id is kept only if it is this plain: it goes into every log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def build_app(
    state: FrontendState,
    *,
    api_key: str = "",
    max_request_bytes: int,
    cors_allow_origins: list[str] | None = None,
) -> FastAPI:
    app = FastAPI(title="vidgraph", version="0.1.0")
    app.state.frontend = state
    app.add_middleware(LimitBody, max_bytes=max_request_bytes, exempt=(inference.UPLOAD_PATH,))
    if api_key:
        app.add_middleware(RequireApiKey, api_key=api_key)
    if cors_allow_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=cors_allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"],
        )
    app.middleware("http")(request_id_header)
    install_error_handlers(app)
    for family in FAMILIES:
        app.include_router(family.router)
    return app


async def request_id_header(request: Request, call_next: Any) -> Response:
    """Every response carries the request's id, and every request leaves one log line."""
    given = request.headers.get("x-request-id", "")
    request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
    request.state.request_id = request_id
    started = time.perf_counter()
    response = await call_next(request)
    response.headers["x-request-id"] = request_id
    log.info(
        "request %s %s %s -> %d in %.3f s",
        request_id,
        request.method,
        request.url.path,
        response.status_code,
        time.perf_counter() - started,
    )
    return response
