"""The block manager alone, with no tensors: allocation, ref counts, prefix hits, eviction."""

from __future__ import annotations

from engine import SamplingParams
from engine.block_manager import BlockManager, compute_hash
from engine.models.interface import MediaSpan
from engine.sequence import Sequence


def seq(tokens: list[int], hashes: list[str] | None = (), spans=()) -> Sequence:
    return Sequence(
        "s",
        list(tokens),
        SamplingParams(),
        media_spans=list(spans),
        media_hashes=None if hashes is None else list(hashes),
    )


def computed(manager: BlockManager, s: Sequence) -> Sequence:
    """Allocates all of a sequence's tokens and marks them computed (hashing full blocks)."""
    manager.allocate(s, manager.cached_blocks(s), s.num_tokens)
    start, s.num_computed_tokens = s.num_computed_tokens, s.num_tokens
    manager.hash_blocks(s, start)
    return s


def test_blocks_are_handed_out_in_order_and_come_back_tail_first():
    manager = BlockManager(num_blocks=4, block_size=4)
    a = computed(manager, seq(list(range(10))))

    assert a.block_table == [0, 1, 2]
    manager.free(a)
    assert list(manager.free_block_ids) == [3, 2, 1, 0]  # the prefix's head is evicted last


def test_a_shared_prefix_is_reused_with_ref_counts_but_never_its_last_token():
    manager = BlockManager(num_blocks=8, block_size=4)
    a = computed(manager, seq(list(range(8)) + [50, 51]))
    b = seq(list(range(8)))  # its last token sits in block 1: only block 0 may hit

    manager.allocate(b, manager.cached_blocks(b), b.num_tokens)

    assert a.block_table == [0, 1, 2] and b.block_table == [0, 3]
    assert b.num_computed_tokens == 4
    assert manager.blocks[0].ref_count == 2
    assert (manager.queried_tokens, manager.hit_tokens) == (10 + 8, 4)


def test_a_freed_block_keeps_its_hash_until_it_is_handed_out_again():
    manager = BlockManager(num_blocks=3, block_size=4)
    manager.free(computed(manager, seq(list(range(9)))))  # blocks 0, 1 hashed, 2 partial

    again = seq(list(range(9)))
    assert manager.cached_blocks(again) == [0, 1]

    manager.free(computed(manager, seq([7] * 12)))  # takes 2, then 1, then 0: evicts both
    assert manager.cached_blocks(again) == []


def test_the_same_tokens_with_different_media_do_not_share_blocks():
    manager = BlockManager(num_blocks=8, block_size=4)
    span = [MediaSpan(0, 1, 6)]
    tokens = [1] + [3] * 6 + [9, 9]
    computed(manager, seq(tokens, ["video-a"], span))

    assert manager.cached_blocks(seq(tokens, ["video-b"], span)) == []
    assert manager.cached_blocks(seq(tokens, ["video-a"], span)) == [0, 1]
    assert manager.cached_blocks(seq(tokens, None, span)) == []  # unknown media: no cache


def test_hashes_are_the_same_in_every_process_and_chain_on_the_prefix():
    key = ((1, 2, 3, 4), b"")
    assert compute_hash(key, -1) == 7683298971482801589
    assert compute_hash(key, 5) != compute_hash(key, -1)


def test_prefix_caching_off_hashes_nothing():
    manager = BlockManager(num_blocks=4, block_size=4, enable_prefix_caching=False)
    manager.free(computed(manager, seq(list(range(9)))))
    assert manager.hash_to_block_id == {}
    assert manager.cached_blocks(seq(list(range(9)))) == []


def test_growing_past_the_free_blocks_takes_nothing():
    manager = BlockManager(num_blocks=2, block_size=4)
    a = seq(list(range(4)))
    manager.allocate(a, [], 4)
    assert not manager.grow(a, 13)
    assert a.block_table == [0] and manager.num_free_blocks == 1
