"""The trip every generating route takes through the graph, whatever shape its answer has.

Check the model name, admit the request (queueing it while the graph is at
capacity), hand it to a Processor, and wait for its first output before
answering, so a bad video URL is a 400 rather than a broken stream. A stream
whose first token is slow (a long video) commits to 200 after `keepalive_s`
and sends SSE comments until it comes, so proxies keep the connection. A
client that goes away cancels its request through the graph, streamed or not.
Outputs are timed here for TTFT and inter-token latency.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from functools import partial
from typing import Any, TypeVar

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from protocol.errors import DeadlineExceeded, ServiceError
from protocol.messages import ProcessorOutput, ProcessorRequest
from protocol.openai import SamplingFields, Usage
from routes import sse
from routes.errors import error_body, error_response
from routes.state import FrontendState, frontend

T = TypeVar("T")
Outputs = AsyncIterator[ProcessorOutput]
# A route's shapes: every choice's outputs -> the whole answer; (first, rest) -> SSE events.
Whole = Callable[[list[list[ProcessorOutput]]], BaseModel]
Chunks = Callable[[ProcessorOutput, Outputs], AsyncIterator[str]]
CLIENT_GONE = 499  # nginx's status for "the client closed the request", for the metrics


class ClientGone(Exception):
    """The HTTP client disconnected before its answer was complete."""


async def respond(
    request: Request, body: SamplingFields, kind: str, whole: Whole, chunks: Chunks
) -> Response:
    """The answer to a generating request: the whole JSON body, or an SSE stream."""
    state = frontend(request)
    request_id: str = request.state.request_id
    ends = Deadline(state, body.timeout)
    try:
        check_model(state, body.model)
        await admit(state, ends)
    except ServiceError as error:
        return finish(state, request_id, error)
    payload = body.model_dump(exclude_unset=True, by_alias=True)
    rest = processor_stream(state, kind, payload, request_id, ends=ends)
    first = asyncio.ensure_future(anext(rest))
    if body.stream:
        try:
            await asyncio.wait({first}, timeout=state.keepalive_s)
        except BaseException:
            await release(state, rest, first)
            raise
        if not first.done() or first.exception() is None:
            events = relay(state, first, rest, chunks)
            return ClosingStream(events, on_close=partial(release, state, rest, first))
    try:
        choices = await unless_disconnected(request, by_choice(first, rest))
        answer = JSONResponse(whole(choices).model_dump(), headers={"x-request-id": request_id})
        state.metrics.answered(200)
        return answer
    except ServiceError as error:
        return finish(state, request_id, error)
    except StopAsyncIteration:
        return finish(state, request_id, ServiceError("the graph ended the request early"))
    except ClientGone:
        state.metrics.answered(CLIENT_GONE, "client_gone")
        return Response(status_code=CLIENT_GONE)
    finally:
        await release(state, rest, first)


class Deadline:
    """When the request must be done: its own `timeout`, within the server's limit."""

    def __init__(self, state: FrontendState, timeout_s: float | None = None) -> None:
        limit = state.request_timeout_s
        self.timeout_s = limit if timeout_s is None else min(timeout_s, limit)
        self.at = time.monotonic() + self.timeout_s

    def left_s(self) -> float:
        """The seconds left, or DeadlineExceeded when none are."""
        left = self.at - time.monotonic()
        if left <= 0:
            raise self.exceeded()
        return left

    def exceeded(self) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"the request did not finish within its timeout of {self.timeout_s:g} s"
        )


def check_model(state: FrontendState, model: str) -> None:
    if model != state.model_name:
        raise ServiceError(
            f"the model '{model}' does not exist; this server serves "
            f"'{state.model_name}' (see /v1/models)",
            status=404,
            type="invalid_request_error",
            param="model",
            code="model_not_found",
        )


async def start_generation(
    state: FrontendState, request: dict[str, Any], request_id: str, report_stages: bool = False
) -> tuple[ProcessorOutput, Outputs]:
    """For routes that shape their own answer: admit a chat request, return its first output
    and the rest.

    The caller must `release` the rest once done with it; on an error raised
    from here, nothing is left to release. With `report_stages`, outputs
    carrying a `stage` (and no text) come before and between the answer's.
    """
    ends = Deadline(state)
    await admit(state, ends)
    stream = processor_stream(state, "chat", request, request_id, report_stages, ends=ends)
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        await release(state, stream)
        raise ServiceError("the graph ended the request early") from None
    except BaseException:  # an error, or this request cancelled while it waited
        await release(state, stream)
        raise
    return first, stream


async def relay(
    state: FrontendState, first: asyncio.Future[ProcessorOutput], rest: Outputs, chunks: Chunks
) -> AsyncIterator[str]:
    """The SSE stream: keep-alive comments until the first output, the route's chunks, then
    `[DONE]`; an error after the response started travels as an error event. Its
    `ClosingStream` releases the request."""
    status, reason = 200, None
    try:
        while not first.done():
            await asyncio.wait({first}, timeout=state.keepalive_s)
            if not first.done():
                yield sse.KEEPALIVE
        async for event in chunks(first.result(), rest):
            yield event
        yield sse.DONE
    except ServiceError as error:
        status, reason = error.status, error.code or error.type
        yield sse.event(error_body(error))
        yield sse.DONE
    except asyncio.CancelledError:
        status, reason = CLIENT_GONE, "client_gone"  # closing `rest` cancels the work downstream
        raise
    finally:
        state.metrics.answered(status, reason)


async def unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """`work`'s result, or ClientGone (with `work` cancelled) once the client disconnects."""
    task = asyncio.ensure_future(work)
    gone = asyncio.ensure_future(disconnected(request))
    try:
        await asyncio.wait({task, gone}, return_when=asyncio.FIRST_COMPLETED)
        if not task.done():
            raise ClientGone
        return task.result()
    finally:
        for pending in (task, gone):
            pending.cancel()
        await asyncio.gather(task, gone, return_exceptions=True)


async def disconnected(request: Request) -> None:
    """Returns when the client has gone (the body was read already: nothing else comes)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def release(
    state: FrontendState, rest: Outputs, first: asyncio.Future[ProcessorOutput] | None = None
) -> None:
    """Close the request's stream (cancelling what is left of it downstream) and its slot.

    This also runs while a cancelled response unwinds, where any await may be
    cancelled again; see `settle`.
    """
    await settle(_close(state, rest, first))


async def settle(work: Awaitable[None]) -> None:
    """Await `work`, which runs to its end even if this await is cancelled.

    Cleanup runs while a cancelled response unwinds, where any await may be
    cancelled again (an anyio cancel scope cancels at every await); as its own
    task, shielded, the work finishes anyway.
    """
    task = asyncio.ensure_future(work)
    _settling.add(task)
    task.add_done_callback(_settling.discard)
    await asyncio.shield(task)


_settling: set[asyncio.Future[None]] = set()  # strong references until each has finished


async def _close(
    state: FrontendState, rest: Outputs, first: asyncio.Future[ProcessorOutput] | None
) -> None:
    try:
        if first is not None and not first.done():
            first.cancel()
            await asyncio.wait({first})
        if first is not None and not first.cancelled():
            first.exception()  # seen: a failure no one relayed is not logged as unretrieved
        await rest.aclose()  # type: ignore[attr-defined]
    finally:
        state.admission.leave()
        state.metrics.in_flight.dec()


class ClosingStream(StreamingResponse):
    """An SSE response that runs `on_close` exactly once when it ends, sent or not.

    Starlette closes a streaming body only if it was started and runs its
    background task only after a clean finish. A client that leaves before the
    first chunk (Starlette then cancels the body before it ever runs), an
    error, or a normal end: each closes the body and then runs `on_close`
    (which releases the request's admission slot and remote work, and whatever
    else the route holds), to its end even while cancelled.
    """

    def __init__(
        self, content: AsyncIterator[str], on_close: Callable[[], Awaitable[None]]
    ) -> None:
        super().__init__(content, media_type="text/event-stream")
        self.on_close = on_close
        self.closed = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except ClientDisconnect:
            pass  # the client left (an ASGI 2.4 server says so this way): no one to answer
        finally:
            await self.close()

    async def close(self) -> None:
        """Close the body, then run `on_close`; only the first call does anything."""
        if self.closed:
            return
        self.closed = True
        await settle(self._close())

    async def _close(self) -> None:
        try:
            await self.body_iterator.aclose()  # type: ignore[attr-defined]
        finally:
            await self.on_close()


def finish(state: FrontendState, request_id: str, error: ServiceError) -> JSONResponse:
    state.metrics.answered(error.status, error.code or error.type)
    return error_response(error, request_id)


async def admit(state: FrontendState, ends: Deadline) -> None:
    """Wait for a slot (timed as queue time), until the deadline, then count the request
    running."""
    started = time.perf_counter()
    try:
        await asyncio.wait_for(state.admission.admit(), ends.left_s())
    except TimeoutError:
        raise ends.exceeded() from None
    state.metrics.queue_time.observe(time.perf_counter() - started)
    state.metrics.in_flight.inc()


async def processor_stream(
    state: FrontendState,
    kind: str,
    body: dict[str, Any],
    request_id: str,
    report_stages: bool = False,
    *,
    ends: Deadline | None = None,
) -> AsyncIterator[ProcessorOutput]:
    """The request's outputs from a Processor, every choice's, timed for TTFT and ITL; at
    the deadline (by default the server's limit from now) the graph stops the work and the
    stream ends in DeadlineExceeded."""
    metrics = state.metrics
    request = ProcessorRequest(
        request_id=request_id, kind=kind, request=body, report_stages=report_stages
    )
    finished: set[int] = set()
    started = last = time.perf_counter()
    first = True
    upstream = state.upstream("chat").stream(
        "generate", request.model_dump(), deadline_s=(ends or Deadline(state)).left_s()
    )
    async with aclosing(upstream):
        async for message in upstream:
            out = ProcessorOutput.model_validate(message)
            tick = time.perf_counter()
            if out.token_ids:
                if first:
                    metrics.ttft.observe(tick - started)
                    first = False
                else:
                    metrics.itl.observe((tick - last) / len(out.token_ids))
                last = tick
            if out.finish_reason is not None:
                finished.add(out.index)
            if len(finished) == out.choices:
                metrics.e2e.observe(tick - started)
                metrics.prompt_tokens.inc(out.usage_prompt_tokens)
                metrics.completion_tokens.inc(out.usage_completion_tokens)
            yield out
            if len(finished) == out.choices:
                return
    raise ServiceError("the graph ended the answer without a finish reason; retry the request")


async def all_outputs(first: ProcessorOutput, rest: Outputs) -> AsyncIterator[ProcessorOutput]:
    """The first output, then the rest until every choice has finished."""
    yield first
    out = first
    finished = {first.index} if first.finish_reason is not None else set()
    while len(finished) < out.choices:
        out = await anext(rest)
        if out.finish_reason is not None:
            finished.add(out.index)
        yield out


async def by_choice(
    first: Awaitable[ProcessorOutput], rest: Outputs
) -> list[list[ProcessorOutput]]:
    """Every output, grouped by choice index, for a whole (non-streamed) answer."""
    head = await first
    outputs = [out async for out in all_outputs(head, rest)]
    return [[out for out in outputs if out.index == i] for i in range(head.choices)]


def usage(out: ProcessorOutput) -> Usage:
    """The request's usage as of `out`."""
    return Usage(
        prompt_tokens=out.usage_prompt_tokens,
        completion_tokens=out.usage_completion_tokens,
        total_tokens=out.usage_prompt_tokens + out.usage_completion_tokens,
    )


def final_usage(choices: list[list[ProcessorOutput]]) -> Usage:
    """The usage of a finished request: the last output of all carries the totals."""
    return usage(max((outs[-1] for outs in choices), key=lambda o: o.usage_completion_tokens))
