"""What the frontend refuses before it reads a request: a missing API key, an oversized body.

Both are plain ASGI middleware so that they act before FastAPI parses
anything: a body over the limit is never buffered whole, and a caller without
the key learns nothing about the API but that it needs one.
"""

from __future__ import annotations

import hmac
from collections.abc import Collection

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.openai import ErrorInfo, ErrorResponse

PROTECTED_PREFIX = "/v1/"  # probes (/health, /live) and /metrics stay open, as in vLLM


def _error(status: int, message: str, type: str, code: str, **headers: str) -> JSONResponse:
    body = ErrorResponse(error=ErrorInfo(message=message, type=type, code=code))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


class RequireApiKey:
    """`Authorization: Bearer <key>` on every `/v1/` route, compared in constant time.

    A plain `==` returns as soon as a byte differs, which lets a caller recover
    the key byte by byte from response times; `hmac.compare_digest` does not.
    """

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.expected = f"Bearer {api_key}".encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PROTECTED_PREFIX):
            await self.app(scope, receive, send)
            return
        given = Headers(scope=scope).get("authorization", "").encode("latin-1")
        if hmac.compare_digest(given, self.expected):
            await self.app(scope, receive, send)
            return
        response = _error(
            401,
            "missing or wrong API key; send it as the header `Authorization: Bearer <key>`",
            "invalid_request_error",
            "invalid_api_key",
            **{"www-authenticate": "Bearer"},
        )
        await response(scope, receive, send)


class LimitBody:
    """Answers 413 to a request body over `max_bytes` without holding more than that.

    A declared `Content-Length` is checked up front. A chunked body is read up
    to the limit and then replayed to the app, so nothing downstream has to
    cope with a body cut off halfway. Paths in `exempt` bound their bodies
    themselves (an upload streams to disk under its own, larger limit).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, exempt: Collection[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.exempt = frozenset(exempt)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None:
            if declared.isdigit() and int(declared) > self.max_bytes:
                await self._refuse(int(declared), scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                await self._refuse(size, scope, receive, send)
                return
            if message["type"] != "http.request" or not message.get("more_body", False):
                break

        async def replay() -> Message:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, size: int, scope: Scope, receive: Receive, send: Send) -> None:
        response = _error(
            413,
            f"the request body is {size} bytes or more, over this server's limit of "
            f"{self.max_bytes} bytes; send media by URL rather than inline "
            "(server option: max-request-bytes)",
            "invalid_request_error",
            "request_too_large",
        )
        await response(scope, receive, send)
