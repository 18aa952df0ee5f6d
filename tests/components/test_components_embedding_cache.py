"""The encode worker's embedding cache keeps recent videos within a byte budget."""

import asyncio

import pytest
import torch

from components.embedding_cache import EmbeddingCache, SingleFlight
from engine.models import MediaEmbedding


def _rows(n: int) -> MediaEmbedding:
    return MediaEmbedding(torch.zeros(n, 4, dtype=torch.float32))  # 16 bytes a row


def test_evicts_least_recently_used_by_bytes() -> None:
    cache = EmbeddingCache(max_bytes=16 * 10)
    cache.put("a", _rows(4))
    cache.put("b", _rows(4))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", _rows(4))  # 12 rows > 10: b goes
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert cache.bytes == 16 * 8
    assert (cache.hits, cache.misses) == (3, 1)


def test_a_single_entry_over_budget_is_not_kept() -> None:
    cache = EmbeddingCache(max_bytes=16)
    cache.put("big", _rows(2))
    assert len(cache) == 0 and cache.bytes == 0


def test_replacing_a_key_keeps_the_byte_count_right() -> None:
    cache = EmbeddingCache(max_bytes=1000)
    cache.put("a", _rows(4))
    cache.put("a", _rows(2))
    assert cache.bytes == 32 and len(cache) == 1


async def test_concurrent_misses_for_one_key_share_one_computation() -> None:
    flights: SingleFlight[str] = SingleFlight()
    computed: list[str] = []
    release = asyncio.Event()

    async def encode(key: str) -> str:
        computed.append(key)
        await release.wait()
        return f"embeddings of {key}"

    calls = [flights.run(key, lambda key=key: encode(key)) for key in ["a", "a", "a", "b"]]
    tasks = [asyncio.ensure_future(call) for call in calls]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*tasks)

    assert computed == ["a", "b"]
    assert results == [
        ("embeddings of a", False),
        ("embeddings of a", True),
        ("embeddings of a", True),
        ("embeddings of b", False),
    ]
    assert flights.shared == 2
    assert (await flights.run("a", lambda: encode("a")))[1] is False  # landed: a new flight


async def test_a_caller_giving_up_does_not_cancel_the_shared_computation() -> None:
    flights: SingleFlight[int] = SingleFlight()
    release = asyncio.Event()

    async def slow() -> int:
        await release.wait()
        return 7

    first = asyncio.ensure_future(flights.run("k", slow))
    second = asyncio.ensure_future(flights.run("k", slow))
    await asyncio.sleep(0)
    first.cancel()
    release.set()

    assert await second == (7, True)
    with pytest.raises(asyncio.CancelledError):
        await first
