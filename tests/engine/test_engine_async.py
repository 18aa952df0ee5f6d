"""AsyncEngine: concurrent streams over one stepping loop; closing a stream aborts it."""

from __future__ import annotations

import asyncio

import pytest

from engine import SamplingParams
from engine.async_engine import AsyncEngine

SAMPLING = SamplingParams(temperature=0, max_tokens=10, ignore_eos=True)


@pytest.fixture
async def async_engine(engine):
    wrapped = AsyncEngine(engine)
    yield wrapped
    await wrapped.close()


async def collect(stream) -> list[int]:
    return [out.token_id async for out in stream]


async def test_concurrent_streams_get_the_tokens_they_get_alone(
    async_engine, engine, prompt, generate
):
    prompts = [prompt(f"USER: {q} ASSISTANT:") for q in ["Hi", "What happens next?", "Why?"]]
    alone = [[o.token_id for o in generate(ids, None, SAMPLING)] for ids in prompts]

    streamed = await asyncio.gather(
        *(
            collect(async_engine.generate(f"s{i}", ids, None, SAMPLING))
            for i, ids in enumerate(prompts)
        )
    )

    assert streamed == alone
    assert async_engine.num_running == 0


async def test_closing_a_stream_aborts_the_request(async_engine, engine, prompt):
    stream = async_engine.generate("gone", prompt("USER: Hi ASSISTANT:"), None, SAMPLING)
    await anext(stream)
    await stream.aclose()

    # The abort runs before the next step; a new request proves the loop went on.
    await collect(async_engine.generate("next", prompt("USER: Why? ASSISTANT:"), None, SAMPLING))
    assert not engine.has_unfinished()


async def test_a_bad_request_raises_to_its_caller_only(async_engine, prompt):
    with pytest.raises(ValueError, match="max-model-len"):
        await collect(async_engine.generate("long", [1] * 5000, None, SAMPLING))
    assert len(await collect(async_engine.generate("ok", prompt("Hi"), None, SAMPLING))) == 10


async def test_prefill_export_then_generate_prefilled(async_engine, engine, prompt, generate):
    ids = prompt("USER: What is the man doing? ASSISTANT:")
    expected = [o.token_id for o in generate(ids, None, SAMPLING)]

    first, kv = await async_engine.prefill_export("p", ids, None, SAMPLING)
    rest = await collect(async_engine.generate_prefilled("p", ids, first.token_id, kv, SAMPLING))

    assert [first.token_id, *rest] == expected
