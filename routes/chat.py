"""`POST /v1/chat/completions`: one JSON body, or a stream of chunks ending in `[DONE]`."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from protocol.errors import ServiceError
from protocol.messages import ProcessorOutput
from protocol.openai import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    Choice,
    ChoiceLogprobs,
    ChunkChoice,
    Delta,
    Usage,
    completion_id,
    now,
)
from routes import sse
from routes.errors import ERROR_RESPONSES, error_body
from routes.generate import Outputs, check_model, finish, release, start_generation
from routes.state import FrontendState, frontend, serves

router = APIRouter(tags=["chat"], dependencies=[Depends(serves("chat"))])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    state = frontend(request)
    request_id: str = request.state.request_id
    try:
        check_model(state, body.model)
        first, rest = await start_generation(state, body.model_dump(), request_id)
    except ServiceError as error:
        return finish(state, request_id, error)
    if body.stream:
        return StreamingResponse(
            chat_events(state, body, first, rest), media_type="text/event-stream"
        )
    try:
        return await whole_completion(state, body, request_id, first, rest)
    except ServiceError as error:
        return finish(state, request_id, error)
    finally:
        await release(state, rest)


async def whole_completion(
    state: FrontendState,
    body: ChatCompletionRequest,
    request_id: str,
    first: ProcessorOutput,
    rest: Outputs,
) -> JSONResponse:
    outputs = [first]
    while outputs[-1].finish_reason is None:
        outputs.append(await anext(rest))
    last = outputs[-1]
    logprobs = [lp for out in outputs for lp in out.logprobs or []]
    completion = ChatCompletion(
        id=completion_id(),
        created=now(),
        model=state.model_name,
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
    state.metrics.requests.labels(status="200").inc()
    return JSONResponse(completion.model_dump(), headers={"x-request-id": request_id})


async def chat_events(
    state: FrontendState, body: ChatCompletionRequest, first: ProcessorOutput, rest: Outputs
) -> AsyncIterator[str]:
    """OpenAI's chunk stream; an error after the first chunk travels as an error event."""
    chunk_id, created = completion_id(), now()

    def chunk(delta: Delta, out: ProcessorOutput | None = None) -> ChatCompletionChunk:
        logprobs = out.logprobs if out is not None and body.logprobs else None
        return ChatCompletionChunk(
            id=chunk_id,
            created=created,
            model=state.model_name,
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
        yield sse.event(chunk(Delta(role="assistant", content="")))
        out = first
        while True:
            yield sse.event(chunk(Delta(content=out.text), out))
            if out.finish_reason is not None:
                break
            out = await anext(rest)
        if body.stream_options and body.stream_options.include_usage:
            usage = Usage(
                prompt_tokens=out.prompt_tokens,
                completion_tokens=out.completion_tokens,
                total_tokens=out.prompt_tokens + out.completion_tokens,
            )
            yield sse.event(
                ChatCompletionChunk(
                    id=chunk_id, created=created, model=state.model_name, choices=[], usage=usage
                )
            )
        yield sse.DONE
    except ServiceError as error:
        status = str(error.status)
        yield sse.event(error_body(error))
        yield sse.DONE
    except asyncio.CancelledError:
        status = "499"  # the client went away; closing `rest` cancels the work downstream
        raise
    finally:
        state.metrics.requests.labels(status=status).inc()
        await release(state, rest)
