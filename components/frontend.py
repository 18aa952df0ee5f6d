"""Frontend: the OpenAI-compatible HTTP server in front of the graph.

The story of a request here: validate the body against the OpenAI schema,
check the model name, admit it under `max-inflight`, hand it to a Processor,
and relay what comes back — one JSON body, or Server-Sent Events ending in
`data: [DONE]`. Every failure anywhere in the graph arrives as a
`ServiceError` and leaves as an OpenAI error body with its status. For
streams, the first chunk is awaited before answering 200, so a bad video URL
is a 400, not a broken stream.

Before any of that, `http_guards` refuses callers without the API key (when
one is set) and bodies over `max-request-bytes`. On SIGTERM the frontend
drains: `/health` answers 503 so load balancers look elsewhere, new requests
get 503, and the ones in flight finish before the server exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import aclosing
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from pydantic import BaseModel, Field, SecretStr
from starlette.exceptions import HTTPException

from components.admission import Admission
from components.http_guards import LimitBody, RequireApiKey
from components.metrics import FrontendMetrics
from protocol.errors import ServiceError
from protocol.messages import ProcessorOutput, ProcessorRequest
from protocol.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    ErrorInfo,
    ErrorResponse,
    ModelCard,
    ModelList,
    Usage,
    completion_id,
    now,
)
from runtime import Component, ComponentConfig

log = logging.getLogger(__name__)

API_KEY_ENV = "VIDGRAPH_API_KEY"
# A caller's own x-request-id is kept only if it is this plain: it goes into every log line.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
MiB = 1 << 20
# What /v1/chat/completions may answer besides 200, for the OpenAPI document.
_ERROR_STATUSES = (400, 401, 404, 413, 429, 500, 503, 504)


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: the runtime owns SIGTERM and calls stop()."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class FrontendConfig(ComponentConfig):
    model: str = "tiny"
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = Field(default=8000, ge=0, le=65535)
    max_inflight: int = Field(default=256, ge=1)
    request_timeout_s: float = Field(default=600.0, gt=0)
    api_key: SecretStr | None = None
    """Required as `Authorization: Bearer` on /v1/ routes; else from $VIDGRAPH_API_KEY."""
    max_request_bytes: int = Field(default=64 * MiB, ge=1024)
    cors_allow_origins: list[str] = []
    """Origins browsers may call from; empty (the default) sends no CORS headers at all."""
    drain_timeout_s: float = Field(default=30.0, ge=0)


def error_response(error: ServiceError, request_id: str) -> JSONResponse:
    body = ErrorResponse(
        error=ErrorInfo(message=error.message, type=error.type, param=error.param, code=error.code)
    )
    headers = {"x-request-id": request_id}
    if error.status in (429, 503):
        headers["retry-after"] = "1"
    return JSONResponse(body.model_dump(), status_code=error.status, headers=headers)


def _sse(payload: BaseModel | dict[str, Any]) -> str:
    data = payload.model_dump_json() if isinstance(payload, BaseModel) else json.dumps(payload)
    return f"data: {data}\n\n"


class Frontend(Component):
    Config = FrontendConfig

    async def start(self) -> None:
        self.model_name = self.config.served_model_name or self.config.model
        self.components = {name: self.client(name) for name in self.graph.names()}
        self.processors = self.components["Processor"]
        self.metrics = FrontendMetrics()
        self.admission = Admission(self.config.max_inflight)
        self.server = _Server(
            uvicorn.Config(
                self.build_app(), host=self.config.host, port=self.config.port, log_level="warning"
            )
        )

    async def run(self) -> None:
        await self.server.serve()

    async def stop(self) -> None:
        left = await self.admission.drain(self.config.drain_timeout_s)
        if left:
            log.warning("%d requests still in flight after the drain; closing them", left)
        self.server.should_exit = True

    async def graph_instances(self) -> dict[str, list[dict[str, str | int]]]:
        """Every component of the graph with its live instances."""
        return {
            name: [
                {"id": i.instance_id, "address": i.address, "pid": i.pid}
                for i in sorted(client.instances(), key=lambda i: i.instance_id)
            ]
            for name, client in self.components.items()
        }

    async def worker_stats(self) -> dict[str, dict[str, dict[str, float]]]:
        names = list(self.components)
        stats = await asyncio.gather(*(self.components[n].collect_stats() for n in names))
        return dict(zip(names, stats, strict=True))

    def build_app(self) -> FastAPI:
        app = FastAPI(title="vidgraph", version="0.1.0")
        # Added innermost first: the request id wraps everything, CORS answers
        # preflights before the key is asked for, the body limit acts last.
        app.add_middleware(LimitBody, max_bytes=self.config.max_request_bytes)
        api_key = self.config.api_key or SecretStr(os.environ.get(API_KEY_ENV, ""))
        if api_key.get_secret_value():
            app.add_middleware(RequireApiKey, api_key=api_key.get_secret_value())
        if self.config.cors_allow_origins:
            app.add_middleware(
                CORSMiddleware,
                allow_origins=self.config.cors_allow_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["authorization", "content-type", "x-request-id"],
            )

        @app.middleware("http")
        async def request_id_header(request: Request, call_next: Any) -> Response:
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

        @app.post(
            "/v1/chat/completions",
            response_model=ChatCompletion,
            responses={
                200: {"content": {"text/event-stream": {}}},
                **{status: {"model": ErrorResponse} for status in _ERROR_STATUSES},
            },
        )
        async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
            return await self.chat_completions(body, request.state.request_id)

        @app.get("/v1/models")
        async def models() -> ModelList:
            return ModelList(data=[ModelCard(id=self.model_name, created=now())])

        @app.get("/live")
        async def live() -> dict[str, str]:
            return {"status": "live"}

        @app.get("/health", responses={503: {"description": "not every component is live"}})
        async def health() -> JSONResponse:
            instances = await self.graph_instances()
            status = "ready" if all(instances.values()) else "unavailable"
            if self.admission.draining:
                status = "draining"
            return JSONResponse(
                {"status": status, "instances": instances},
                status_code=200 if status == "ready" else 503,
            )

        @app.get("/metrics", response_class=PlainTextResponse)
        async def metrics() -> Response:
            body, content_type = self.metrics.render(await self.worker_stats())
            return Response(body, media_type=content_type)

        return app

    async def chat_completions(self, body: ChatCompletionRequest, request_id: str) -> Response:
        if body.model != self.model_name:
            return self.finish(
                request_id,
                ServiceError(
                    f"the model '{body.model}' does not exist; this server serves "
                    f"'{self.model_name}' (see /v1/models)",
                    status=404,
                    type="invalid_request_error",
                    param="model",
                    code="model_not_found",
                ),
            )
        try:
            self.admission.admit()
        except ServiceError as refused:
            return self.finish(request_id, refused)
        self.metrics.in_flight.inc()
        stream = self.processor_stream(body, request_id)
        try:
            first = await anext(stream)
        except ServiceError as error:
            await self.release(stream)
            return self.finish(request_id, error)
        except StopAsyncIteration:
            await self.release(stream)
            return self.finish(request_id, ServiceError("the graph ended the request early"))
        if body.stream:
            return StreamingResponse(
                self.sse_events(body, request_id, first, stream),
                media_type="text/event-stream",
            )
        try:
            return await self.whole_completion(body, request_id, first, stream)
        except ServiceError as error:
            return self.finish(request_id, error)
        finally:
            await self.release(stream)

    def finish(self, request_id: str, error: ServiceError) -> JSONResponse:
        self.metrics.requests.labels(status=str(error.status)).inc()
        return error_response(error, request_id)

    async def release(self, stream: AsyncIterator[ProcessorOutput]) -> None:
        await stream.aclose()  # type: ignore[attr-defined]
        self.admission.leave()
        self.metrics.in_flight.dec()

    async def processor_stream(
        self, body: ChatCompletionRequest, request_id: str
    ) -> AsyncIterator[ProcessorOutput]:
        """The request's outputs from a Processor, timed for TTFT and inter-token latency."""
        request = ProcessorRequest(request_id=request_id, request=body.model_dump())
        started = last = time.perf_counter()
        first = True
        upstream = self.processors.stream(
            "generate", request.model_dump(), deadline_s=self.config.request_timeout_s
        )
        async with aclosing(upstream):
            async for message in upstream:
                out = ProcessorOutput.model_validate(message)
                tick = time.perf_counter()
                if out.token_ids:
                    if first:
                        self.metrics.ttft.observe(tick - started)
                        first = False
                    else:
                        self.metrics.itl.observe((tick - last) / len(out.token_ids))
                    last = tick
                if out.finish_reason is not None:
                    self.metrics.prompt_tokens.inc(out.prompt_tokens)
                    self.metrics.completion_tokens.inc(out.completion_tokens)
                yield out
                if out.finish_reason is not None:
                    return
        raise ServiceError("the graph ended the answer without a finish reason; retry the request")

    async def whole_completion(
        self,
        body: ChatCompletionRequest,
        request_id: str,
        first: ProcessorOutput,
        rest: AsyncIterator[ProcessorOutput],
    ) -> JSONResponse:
        outputs = [first]
        while outputs[-1].finish_reason is None:
            outputs.append(await anext(rest))
        last = outputs[-1]
        logprobs = [lp for out in outputs for lp in out.logprobs or []]
        completion = ChatCompletion(
            id=completion_id(),
            created=now(),
            model=self.model_name,
            choices=[
                Choice(
                    message=AssistantMessage(content="".join(out.text for out in outputs)),
                    logprobs=ChoiceLogprobs(content=logprobs) if body.logprobs else None,
                    finish_reason=last.finish_reason,
                )
            ],
            usage=Usage(
                prompt_tokens=last.prompt_tokens,
                completion_tokens=last.completion_tokens,
                total_tokens=last.prompt_tokens + last.completion_tokens,
            ),
        )
        self.metrics.requests.labels(status="200").inc()
        return JSONResponse(completion.model_dump(), headers={"x-request-id": request_id})

    async def sse_events(
        self,
        body: ChatCompletionRequest,
        request_id: str,
        first: ProcessorOutput,
        rest: AsyncIterator[ProcessorOutput],
    ) -> AsyncIterator[str]:
        """OpenAI's chunk stream; an error after the first chunk travels as an error event."""
        chunk_id, created = completion_id(), now()

        def chunk(delta: Delta, out: ProcessorOutput | None = None) -> ChatCompletionChunk:
            logprobs = out.logprobs if out is not None and body.logprobs else None
            return ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=self.model_name,
                choices=[
                    ChunkChoice(
                        delta=delta,
                        logprobs=ChoiceLogprobs(content=logprobs) if logprobs else None,
                        finish_reason=out.finish_reason if out is not None else None,
                    )
                ],
            )

        status = "200"
        try:
            yield _sse(chunk(Delta(role="assistant", content="")))
            out = first
            while True:
                yield _sse(chunk(Delta(content=out.text), out))
                if out.finish_reason is not None:
                    break
                out = await anext(rest)
            if body.stream_options and body.stream_options.include_usage:
                usage = Usage(
                    prompt_tokens=out.prompt_tokens,
                    completion_tokens=out.completion_tokens,
                    total_tokens=out.prompt_tokens + out.completion_tokens,
                )
                yield _sse(
                    ChatCompletionChunk(
                        id=chunk_id, created=created, model=self.model_name, choices=[], usage=usage
                    )
                )
            yield "data: [DONE]\n\n"
        except ServiceError as error:
            status = str(error.status)
            info = ErrorInfo(
                message=error.message, type=error.type, param=error.param, code=error.code
            )
            yield _sse(ErrorResponse(error=info))
            yield "data: [DONE]\n\n"
        except asyncio.CancelledError:
            status = "499"  # the client went away; closing `rest` cancels the work downstream
            raise
        finally:
            self.metrics.requests.labels(status=status).inc()
            await self.release(rest)
