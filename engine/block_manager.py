"""Who owns which KV block: allocation, reference counts and prefix caching, with no tensors.

The KV cache (`kv_cache.py`) is `num_blocks` blocks of `block_size` tokens; a
sequence's `block_table` lists the blocks that hold its tokens, in order. This file
is only the bookkeeping, in nano-vllm's shape: every `Block` has an id, a reference
count, a hash (-1: none) and the key it was hashed from; free blocks wait in a deque
in the order they were freed (least recently used first), used ones are in a set.

Prefix caching: once a block is full and its KV computed, it is hashed, chained on
the block before it (so a hash names the whole prefix up to the block's end), and
`hash_to_block_id` finds it. A new sequence whose first blocks hash the same reuses
them instead of recomputing them, after checking the stored key (a hash collision
must never hand out another prompt's KV). A freed block keeps its hash, so a later
request can revive it until the block is handed out again (LRU eviction). A hit
never covers a prompt's last token: its logits are what the first token is sampled
from, so at least that token is always computed.

Hashes must agree between processes (a prefill and a decode worker, or a restarted
one), so they use blake2b with a fixed key, never Python's per-process `hash()`.
Media placeholders expand to identical token ids for every video, so a block that
holds media tokens also hashes each item's identity (the encode worker's cache key:
content hash + sampling parameters) and where in the block the item starts.
"""

from __future__ import annotations

import hashlib
from array import array
from collections import deque
from dataclasses import dataclass
from typing import Protocol

_HASH_KEY = b"vidgraph-kv-block-v1"

# (token ids, media identities and offsets) of one full block: what its hash covers
BlockKey = tuple[tuple[int, ...], bytes]


class BlockOwner(Protocol):
    """What the block manager needs of a sequence (see `engine/sequence.py`)."""

    block_table: list[int]
    num_computed_tokens: int

    @property
    def num_tokens(self) -> int: ...

    @property
    def cacheable(self) -> bool: ...

    def block_key(self, index: int, block_size: int) -> BlockKey: ...


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int = -1
    key: BlockKey | None = None


def compute_hash(key: BlockKey, prefix: int) -> int:
    """The chained hash of a full block: its key, after the hash of the block before it."""
    token_ids, media = key
    digest = hashlib.blake2b(digest_size=8, key=_HASH_KEY)
    digest.update(prefix.to_bytes(8, "little", signed=True))
    digest.update(array("q", token_ids).tobytes())
    digest.update(media)
    return int.from_bytes(digest.digest(), "little") >> 1  # >= 0, never the -1 of "none"


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free_block_ids: deque[int] = deque(range(num_blocks))
        self.used_block_ids: set[int] = set()
        self.hash_to_block_id: dict[int, int] = {}
        self.queried_tokens = 0  # prompt tokens looked up in the prefix cache
        self.hit_tokens = 0  # of those, found cached

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        return len(self.free_block_ids)

    def blocks_for(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    def cached_blocks(self, seq: BlockOwner) -> list[int]:
        """Ids of the cached blocks that hold the sequence's first tokens (not its last one)."""
        if not (self.enable_prefix_caching and seq.cacheable):
            return []
        hits: list[int] = []
        prefix = -1
        for index in range((seq.num_tokens - 1) // self.block_size):
            key = seq.block_key(index, self.block_size)
            prefix = compute_hash(key, prefix)
            block_id = self.hash_to_block_id.get(prefix)
            if block_id is None or self.blocks[block_id].key != key:
                break
            hits.append(block_id)
        return hits

    def can_allocate(self, cached: list[int], num_tokens: int) -> bool:
        """Whether `num_tokens` fit in `cached` blocks plus free ones (a revived block uses one)."""
        reused = sum(block_id in self.used_block_ids for block_id in cached)
        return self.blocks_for(num_tokens) - reused <= self.num_free_blocks

    def allocate(self, seq: BlockOwner, cached: list[int], num_tokens: int) -> None:
        """Gives a sequence without blocks the cached ones, then fresh ones up to `num_tokens`."""
        assert not seq.block_table, "allocate is for a sequence that holds no blocks"
        for block_id in cached:
            block = self.blocks[block_id]
            if block_id in self.used_block_ids:
                block.ref_count += 1
            else:
                self.free_block_ids.remove(block_id)
                self.used_block_ids.add(block_id)
                block.ref_count = 1
            seq.block_table.append(block_id)
        seq.num_computed_tokens = len(cached) * self.block_size
        if self.enable_prefix_caching and seq.cacheable:
            self.queried_tokens += seq.num_tokens
            self.hit_tokens += seq.num_computed_tokens
        self.grow(seq, num_tokens)

    def grow(self, seq: BlockOwner, num_tokens: int) -> bool:
        """Appends fresh blocks so the table covers `num_tokens`; False (and nothing taken) if
        there are not enough free blocks."""
        needed = self.blocks_for(num_tokens) - len(seq.block_table)
        if needed > self.num_free_blocks:
            return False
        for _ in range(needed):
            seq.block_table.append(self._take_free_block())
        return True

    def free(self, seq: BlockOwner) -> None:
        """Drops the sequence's blocks; the last ones go first into the free queue, so the
        cache evicts a prefix's tail before its head."""
        for block_id in reversed(seq.block_table):
            block = self.blocks[block_id]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.used_block_ids.remove(block_id)
                self.free_block_ids.append(block_id)
        seq.block_table.clear()
        seq.num_computed_tokens = 0

    def hash_blocks(self, seq: BlockOwner, start_tokens: int) -> None:
        """Hashes the blocks that became full and computed since `start_tokens` were computed."""
        if not (self.enable_prefix_caching and seq.cacheable):
            return
        first = start_tokens // self.block_size
        end = seq.num_computed_tokens // self.block_size
        prefix = self.blocks[seq.block_table[first - 1]].hash if first else -1
        for index in range(first, end):
            block = self.blocks[seq.block_table[index]]
            key = seq.block_key(index, self.block_size)
            prefix = compute_hash(key, prefix)
            block.hash, block.key = prefix, key
            self.hash_to_block_id[prefix] = block.block_id

    def _take_free_block(self) -> int:
        """The least recently freed block, its old hash forgotten: this is the eviction."""
        block_id = self.free_block_ids.popleft()
        block = self.blocks[block_id]
        if block.hash != -1 and self.hash_to_block_id.get(block.hash) == block_id:
            del self.hash_to_block_id[block.hash]
        block.hash, block.key, block.ref_count = -1, None, 1
        self.used_block_ids.add(block_id)
        return block_id
