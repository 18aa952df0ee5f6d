"""`POST /v1/chat/completions`: one JSON body, or a stream of chunks ending in `[DONE]`."""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

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
    completion_id,
    now,
)
from routes import sse
from routes.errors import ERROR_RESPONSES
from routes.generate import Outputs, all_outputs, final_usage, respond, usage
from routes.state import frontend, serves

router = APIRouter(tags=["chat"], dependencies=[Depends(serves("chat"))])


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    model = frontend(request).model_name
    # vLLM's `request_id` names the completion; by default, a fresh one.
    answer_id = f"chatcmpl-{body.request_id}" if body.request_id else completion_id()

    def whole(choices: list[list[ProcessorOutput]]) -> ChatCompletion:
        return ChatCompletion(
            id=answer_id,
            created=now(),
            model=model,
            choices=[
                Choice(
                    index=index,
                    message=AssistantMessage(content="".join(out.text for out in outs)),
                    logprobs=logprobs(outs) if body.logprobs else None,
                    finish_reason=outs[-1].finish_reason,
                )
                for index, outs in enumerate(choices)
            ],
            usage=final_usage(choices),
        )

    async def chunks(first: ProcessorOutput, rest: Outputs) -> AsyncIterator[str]:
        chunk_id, created = answer_id, now()
        options = body.stream_options
        continuous = options is not None and options.continuous_usage_stats

        def chunk(index: int, delta: Delta, out: ProcessorOutput | None) -> ChatCompletionChunk:
            choice = ChunkChoice(
                index=index,
                delta=delta,
                logprobs=logprobs([out]) if out is not None and body.logprobs else None,
                finish_reason=out.finish_reason if out is not None else None,
            )
            return ChatCompletionChunk(
                id=chunk_id,
                created=created,
                model=model,
                choices=[choice],
                usage=usage(out) if continuous and out is not None else None,
            )

        for index in range(first.choices):
            yield sse.event(chunk(index, Delta(role="assistant", content=""), None))
        out = first
        async for out in all_outputs(first, rest):
            yield sse.event(chunk(out.index, Delta(content=out.text), out))
        if options is not None and options.include_usage:
            end = ChatCompletionChunk(
                id=chunk_id, created=created, model=model, choices=[], usage=usage(out)
            )
            yield sse.event(end)

    return await respond(request, body, "chat", whole, chunks)


def logprobs(outputs: list[ProcessorOutput]) -> ChoiceLogprobs | None:
    content = [lp for out in outputs for lp in out.logprobs or []]
    return ChoiceLogprobs(content=content) if content else None
