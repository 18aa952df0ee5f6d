"""`POST /v1/completions`: text completion of a prompt (text or token ids), OpenAI's legacy API.

The same trip through the graph as chat, without the chat template; several
prompts give several choices (`n` each), and logprobs come in the legacy shape
(parallel lists with text offsets).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from protocol.messages import ProcessorOutput
from protocol.openai import (
    Completion,
    CompletionChoice,
    CompletionLogprobs,
    CompletionRequest,
    completion_id,
    now,
)
from routes import sse
from routes.errors import ERROR_RESPONSES
from routes.generate import Outputs, all_outputs, final_usage, respond, usage
from routes.state import frontend, serves

router = APIRouter(tags=["completions"], dependencies=[Depends(serves("chat"))])


@router.post(
    "/v1/completions",
    response_model=Completion,
    responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
)
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    model = frontend(request).model_name
    wants_logprobs = body.logprobs is not None

    def whole(choices: list[list[ProcessorOutput]]) -> Completion:
        return Completion(
            id=completion_id("cmpl"),
            created=now(),
            model=model,
            choices=[
                CompletionChoice(
                    index=index,
                    text="".join(out.text for out in outs),
                    logprobs=legacy_logprobs(outs) if wants_logprobs else None,
                    finish_reason=outs[-1].finish_reason,
                )
                for index, outs in enumerate(choices)
            ],
            usage=final_usage(choices),
        )

    async def chunks(first: ProcessorOutput, rest: Outputs) -> AsyncIterator[str]:
        chunk_id, created = completion_id("cmpl"), now()
        options = body.stream_options
        continuous = options is not None and options.continuous_usage_stats
        offsets = [0] * first.choices
        out = first
        async for out in all_outputs(first, rest):
            choice = CompletionChoice(
                index=out.index,
                text=out.text,
                logprobs=legacy_logprobs([out], offsets[out.index]) if wants_logprobs else None,
                finish_reason=out.finish_reason,
            )
            offsets[out.index] += len(out.text)
            yield sse.event(
                Completion(
                    id=chunk_id,
                    created=created,
                    model=model,
                    choices=[choice],
                    usage=usage(out) if continuous else None,
                )
            )
        if options is not None and options.include_usage:
            end = Completion(
                id=chunk_id, created=created, model=model, choices=[], usage=usage(out)
            )
            yield sse.event(end)

    return await respond(request, body, "completion", whole, chunks)


def legacy_logprobs(outputs: list[ProcessorOutput], offset: int = 0) -> CompletionLogprobs:
    """Chat-shaped logprobs as the legacy lists; offsets count from `offset` in the text."""
    logprobs = CompletionLogprobs()
    for entry in (lp for out in outputs for lp in out.logprobs or []):
        logprobs.tokens.append(entry.token)
        logprobs.token_logprobs.append(entry.logprob)
        logprobs.top_logprobs.append({top.token: top.logprob for top in entry.top_logprobs})
        logprobs.text_offset.append(offset)
        offset += len(entry.token)
    return logprobs
