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
from typing import TYPE_CHECKING

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from routes import chat, completions, frames, health, inference, models, ops, page, videos
from routes.errors import install_error_handlers
from routes.http_guards import LimitBody, RequireApiKey
from routes.state import FrontendState

# Only for the type: the vLLM venv's FastAPI (vLLM pins < 0.137) has no telemetry module,
# and it runs no frontend, but it imports the graph, so this module.
if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

log = logging.getLogger(__name__)

# One line per API family; each module has a `router`.
FAMILIES = (chat, completions, models, ops, inference, health, videos, page, frames)

# Polled by probes and scrapers every few seconds: no spans for them.
PROBES = frozenset({"/live", "/health", "/metrics", "/v1/health", "/v1/health/detailed"})

# A caller's own x-request-id is kept only if it is this plain: it goes into every log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def build_app(
    state: FrontendState,
    *,
    api_key: str = "",
    max_request_bytes: int,
    cors_allow_origins: list[str] | None = None,
) -> FastAPI:
    # FastAPI's own OpenTelemetry spans (request, dependencies, endpoint) join the
    # caller's trace from its `traceparent`; runtime.tracing carries it on from here.
    telemetry: TelemetryConfig = {
        "exclude": lambda scope: scope.get("path") in PROBES,
        "metrics": False,  # /metrics has them, in Prometheus' form
        "logs": False,  # the log line per request below
    }
    app = FastAPI(title="vidgraph", version="0.1.0", telemetry=telemetry)
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
    app.add_middleware(RequestId)
    install_error_handlers(app)
    for family in FAMILIES:
        app.include_router(family.router)
    return app


class RequestId:
    """Every response carries the request's id, and every request leaves one log line.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's BaseHTTPMiddleware
    hides the client's disconnect from the routes, which cancel work on it.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started = time.perf_counter()
        status = 0

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            log.info(
                "request %s %s %s -> %d in %.3f s",
                request_id,
                scope["method"],
                scope["path"],
                status,
                time.perf_counter() - started,
            )
