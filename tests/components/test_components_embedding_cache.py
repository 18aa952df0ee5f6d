"""The encode worker's embedding cache keeps recent videos within a byte budget."""

import torch

from components.embedding_cache import EmbeddingCache


def _rows(n: int) -> torch.Tensor:
    return torch.zeros(n, 4, dtype=torch.float32)  # 16 bytes a row


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
