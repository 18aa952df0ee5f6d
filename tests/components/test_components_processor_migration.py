"""The processor's decode calls against scripted workers: migration mid-stream, routing keys."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from components.processor import Processor, ProcessorConfig, Prompt, sampling_options
from protocol.errors import WorkerLost
from protocol.messages import MediaRef, ProcessorRequest
from protocol.openai import ChatCompletionRequest
from runtime import Context

ANSWER = list(b"a whole answer")


class ByteTokenizer:
    def decode(self, token_ids: list[int], skip_special_tokens: bool = True) -> str:
        return bytes(token_ids).decode("utf-8", errors="replace")


class Decoders:
    """Decode workers that each stream the answer from where the request says, dying at `dies`.

    `dies[k]`: how many tokens the k-th worker streams before it is lost (None: all).
    """

    def __init__(self, dies: list[int | None]) -> None:
        self.dies = dies
        self.requests: list[dict[str, Any]] = []
        self.route_keys: list[str | None] = []

    async def stream(
        self, endpoint: str, request: dict[str, Any], route_key: str | None = None, **_: Any
    ) -> AsyncIterator[Any]:
        self.requests.append(request)
        self.route_keys.append(route_key)
        dies = self.dies[len(self.requests) - 1]
        start = len(request["generated_token_ids"])
        for sent, position in enumerate(range(start, len(ANSWER))):
            if sent == dies:
                raise WorkerLost("the decode worker died")
            last = position == len(ANSWER) - 1
            yield {
                "token_ids": [ANSWER[position]],
                "finish_reason": "length" if last else None,
                "prompt_tokens": 7,
            }


async def run_choice(
    dies: list[int | None], limit: int, media: list[MediaRef] | None = None
) -> tuple[list[Any], Decoders, Processor]:
    processor = Processor(ProcessorConfig(migration_limit=limit), None, None)  # type: ignore[arg-type]
    processor.tokenizer = ByteTokenizer()
    processor.counts = {"migrations": 0}
    processor.decoders = decoders = Decoders(dies)  # type: ignore[assignment]
    body = ChatCompletionRequest.model_validate(
        {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}
    )
    incoming = ProcessorRequest(request_id="r", request=body.model_dump())
    sampling = sampling_options(body.model_copy(update={"max_tokens": len(ANSWER)}), 3, 100)
    ctx = Context("r", time.monotonic() + 60)
    choice = processor.choice(body, incoming, 0, Prompt([1, 2, 3], media or []), sampling, ctx)
    outputs = [out async for out in choice]
    return outputs, decoders, processor


async def test_a_choice_lost_mid_stream_goes_on_elsewhere_from_its_next_token() -> None:
    outputs, decoders, processor = await run_choice([5, None], limit=1)

    assert [t for out in outputs for t in out.token_ids] == ANSWER  # no gap, no duplicate
    assert "".join(out.text for out in outputs) == bytes(ANSWER).decode()
    resent = decoders.requests[1]
    assert resent["generated_token_ids"] == ANSWER[:5]
    assert resent["prompt_token_ids"] == [1, 2, 3]
    assert resent["sampling"]["max_tokens"] == len(ANSWER)  # the generated tokens count in it
    last = outputs[-1]
    assert (last.finish_reason, last.completion_tokens, last.prompt_tokens) == ("length", 14, 7)
    assert processor.stats() == {"migrations": 1}


@pytest.mark.parametrize(
    ("dies", "limit"),
    [
        ([5, 3], 1),  # the second worker dies too: the limit is spent
        ([5], 0),  # migration off: today's error
        ([0], 1),  # lost before any reply: the client already tried elsewhere
    ],
    ids=["limit-spent", "limit-0", "no-reply"],
)
async def test_the_stream_ends_with_the_loss_when_it_cannot_move(
    dies: list[int | None], limit: int
) -> None:
    with pytest.raises(WorkerLost):
        await run_choice(dies, limit)


def video(name: str) -> list[MediaRef]:
    return [MediaRef(url=f"file:///videos/{name}.mp4", modality="video")]


async def test_a_choice_routes_by_its_media_so_a_conversation_finds_its_kv_again() -> None:
    """The key names the media only: another question about the same video shares it."""
    _, first, _ = await run_choice([5, None], limit=1, media=video("a"))
    _, again, _ = await run_choice([None], limit=1, media=video("a"))
    _, other, _ = await run_choice([None], limit=1, media=video("b"))
    _, text, _ = await run_choice([None], limit=1)

    [key, resent_key] = first.route_keys  # the migrated resend keeps it
    assert key is not None and resent_key == key
    assert again.route_keys == [key]
    assert other.route_keys[0] not in (None, key)
    assert text.route_keys == [None]  # no media: the least loaded worker
