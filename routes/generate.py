"""The trip every generating route takes through the graph.

Check the model name, admit the request under `max-inflight`, hand it to a
Processor, and wait for its first output before answering: a bad video URL is
then a 400, not a broken stream. Outputs are timed here for TTFT and
inter-token latency, whatever shape the route gives them afterwards.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from fastapi.responses import JSONResponse

from protocol.errors import ServiceError
from protocol.messages import ProcessorOutput, ProcessorRequest
from routes.errors import error_response
from routes.state import FrontendState

Outputs = AsyncIterator[ProcessorOutput]


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
    """Admit the request and return its first output and the rest.

    The caller must `release` the rest once done with it; on an error raised
    from here, nothing is left to release. With `report_stages`, outputs
    carrying a `stage` (and no text) come before and between the answer's.
    """
    state.admission.admit()
    state.metrics.in_flight.inc()
    stream = processor_stream(state, request, request_id, report_stages)
    try:
        first = await anext(stream)
    except ServiceError:
        await release(state, stream)
        raise
    except StopAsyncIteration:
        await release(state, stream)
        raise ServiceError("the graph ended the request early") from None
    return first, stream


async def release(state: FrontendState, stream: Outputs) -> None:
    await stream.aclose()  # type: ignore[attr-defined]
    state.admission.leave()
    state.metrics.in_flight.dec()


def finish(state: FrontendState, request_id: str, error: ServiceError) -> JSONResponse:
    state.metrics.requests.labels(status=str(error.status)).inc()
    return error_response(error, request_id)


async def processor_stream(
    state: FrontendState, body: dict[str, Any], request_id: str, report_stages: bool = False
) -> AsyncIterator[ProcessorOutput]:
    """The request's outputs from a Processor, timed for TTFT and inter-token latency."""
    metrics = state.metrics
    request = ProcessorRequest(request_id=request_id, request=body, report_stages=report_stages)
    started = last = time.perf_counter()
    first = True
    upstream = state.upstream("chat").stream(
        "generate", request.model_dump(), deadline_s=state.request_timeout_s
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
                metrics.prompt_tokens.inc(out.prompt_tokens)
                metrics.completion_tokens.inc(out.completion_tokens)
            yield out
            if out.finish_reason is not None:
                return
    raise ServiceError("the graph ended the answer without a finish reason; retry the request")
