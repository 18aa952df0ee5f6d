"""The KV cache keeps its used slots dense and hands the batch one view per layer."""

from __future__ import annotations

import pytest
import torch

from engine import SequenceKV
from engine.kv_cache import KVCache


def cache(num_slots: int = 3) -> KVCache:
    return KVCache(
        num_layers=2,
        num_kv_heads=2,
        head_dim=4,
        num_slots=num_slots,
        max_len=16,
        dtype=torch.float32,
        device=torch.device("cpu"),
    )


def kv(fill: float, tokens: int) -> SequenceKV:
    return SequenceKV(torch.full((2, 2, 2, tokens, 4), fill))


def test_freeing_a_slot_moves_the_last_sequence_into_it():
    kvc = cache()
    for name, fill, tokens in [("a", 1.0, 3), ("b", 2.0, 5), ("c", 3.0, 4)]:
        kvc.allocate(name, kv(fill, tokens))

    kvc.free("a")

    assert kvc.request_ids == ["c", "b"] and kvc.lengths == [4, 5]
    keys, values = kvc.view(layer=1, num_tokens=5)
    assert keys.shape == (2, 2, 5, 4)
    assert torch.all(keys[0, :, :4] == 3.0) and torch.all(values[1] == 2.0)


def test_decode_writes_land_at_each_sequence_own_position():
    kvc = cache()
    kvc.allocate("a", kv(1.0, 2))
    kvc.allocate("b", kv(2.0, 6))
    positions = torch.tensor(kvc.lengths)

    kvc.write(0, positions, torch.full((2, 2, 4), 7.0), torch.full((2, 2, 4), 8.0))
    kvc.advance()

    keys, values = kvc.view(layer=0, num_tokens=7)
    assert torch.all(keys[0, :, 2] == 7.0) and torch.all(keys[1, :, 6] == 7.0)
    assert torch.all(values[0, :, :2] == 1.0) and torch.all(values[1, :, 6] == 8.0)
    assert kvc.lengths == [3, 7]


def test_a_full_cache_and_a_foreign_kv_are_refused():
    kvc = cache(num_slots=1)
    kvc.allocate("a", kv(1.0, 2))
    with pytest.raises(RuntimeError, match="no free KV slot"):
        kvc.allocate("b", kv(1.0, 2))
    with pytest.raises(ValueError, match="does not fit"):
        kvc.check_fits(SequenceKV(torch.zeros(3, 2, 2, 4, 4)))
    with pytest.raises(ValueError, match="max-model-len"):
        kvc.check_fits(kv(1.0, 16))
