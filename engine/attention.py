"""Attention through block tables: the one place that knows how tokens map to KV blocks.

A forward pass carries tokens of many sequences one after another. For each, the
runner says where its tokens start in the batch, how many there are, how many
tokens of KV it has once they are written (`context_len`), and its block table.
Every layer then (1) writes the new keys and values into their cache slots and
(2) lets each token attend to its sequence's cached tokens and to itself.

Decodes (one query token each) run as one batch; each prefill chunk runs on its
own, its queries aligned to the end of its context (causal, "bottom-right").
Where flash-attn is importable on CUDA, both read the paged cache in place with
`flash_attn_with_kvcache` (its paged mode needs blocks of a multiple of 256
tokens); everywhere else the blocks are gathered and fed to torch's SDPA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.kv_cache import KVCache, slot_mapping

try:  # the paged CUDA kernel, when the flash-attn wheel is installed
    from flash_attn import flash_attn_with_kvcache
except ImportError:
    flash_attn_with_kvcache = None


@dataclass
class SeqSlice:
    """One sequence's part of a forward pass."""

    query_start: int  # index of its first token in the batch
    query_len: int  # its tokens in this forward
    context_len: int  # tokens of KV it has once this forward has written them
    block_table: list[int]


class PagedAttention:
    """The engine's `Attention` for one forward pass (see `engine/models/interface.py`)."""

    def __init__(self, cache: KVCache, seqs: list[SeqSlice]) -> None:
        device = cache.data.device
        self.cache = cache
        size = cache.block_size
        slots: list[int] = []
        for s in seqs:
            slots += slot_mapping(s.block_table, s.context_len - s.query_len, s.context_len, size)
        self.slots = torch.tensor(slots, device=device)
        self.prefills = [s for s in seqs if s.query_len > 1]
        decodes = [s for s in seqs if s.query_len == 1]
        self.decode_rows = torch.tensor([s.query_start for s in decodes], device=device)
        self.flash = (
            flash_attn_with_kvcache is not None and device.type == "cuda" and size % 256 == 0
        )
        # By where each chunk starts in the batch (unique within a forward).
        self.chunks = {} if self.flash else {s.query_start: self._chunk(s) for s in self.prefills}
        if decodes:
            width = max(len(s.block_table) for s in decodes)
            tables = [s.block_table + [0] * (width - len(s.block_table)) for s in decodes]
            self.decode_tables = torch.tensor(tables, dtype=torch.int32, device=device)
            self.decode_lens = torch.tensor(
                [s.context_len for s in decodes], dtype=torch.int32, device=device
            )
            self.decode_blocks = self.decode_tables.long()
            span = torch.arange(width * size, device=device)
            # Additive (0 or -inf), built once per forward: a boolean mask is
            # converted again in every layer.
            beyond = (span[None, :] >= self.decode_lens[:, None])[:, None, None, :]
            self.decode_mask = torch.zeros(beyond.shape, dtype=cache.data.dtype, device=device)
            self.decode_mask.masked_fill_(beyond, float("-inf"))

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
    ) -> torch.Tensor:
        k_cache, v_cache = self.cache.layer(layer)
        heads, dim = k_cache.shape[-2:]
        k_cache.view(-1, heads, dim).index_copy_(0, self.slots, k.to(k_cache.dtype))
        v_cache.view(-1, heads, dim).index_copy_(0, self.slots, v.to(v_cache.dtype))
        out = torch.empty_like(q)
        if len(self.decode_rows):
            out[self.decode_rows] = self._decode(layer, q[self.decode_rows], scale)
        for s in self.prefills:
            rows = slice(s.query_start, s.query_start + s.query_len)
            out[rows] = self._prefill(layer, q[rows], s, scale)
        return out

    def _decode(self, layer: int, q: torch.Tensor, scale: float) -> torch.Tensor:
        """q [B, heads, dim], one token per sequence -> [B, heads, dim]."""
        if self.flash:
            k_cache, v_cache = self.cache.layer(layer)
            return flash_attn_with_kvcache(
                q[:, None],
                k_cache,
                v_cache,
                cache_seqlens=self.decode_lens,
                block_table=self.decode_tables,
                softmax_scale=scale,
                causal=True,
            )[:, 0]
        kv = self.cache.gather(layer, self.decode_blocks).flatten(2, 3)  # [2, B, S, kv_heads, dim]
        keys, values = kv.transpose(2, 3)  # each [B, kv_heads, S, dim]
        return _sdpa(q[:, :, None], keys, values, scale, self.decode_mask)[:, :, 0]

    def _prefill(self, layer: int, q: torch.Tensor, s: SeqSlice, scale: float) -> torch.Tensor:
        """q [n, heads, dim] of one sequence's chunk, attending to its whole context."""
        if self.flash:
            k_cache, v_cache = self.cache.layer(layer)
            return flash_attn_with_kvcache(
                q[None],
                k_cache,
                v_cache,
                cache_seqlens=torch.tensor([s.context_len], dtype=torch.int32, device=q.device),
                block_table=torch.tensor([s.block_table], dtype=torch.int32, device=q.device),
                softmax_scale=scale,
                causal=True,
            )[0]
        blocks, mask = self.chunks[s.query_start]
        kv = self.cache.gather(layer, blocks).flatten(1, 2)[:, : s.context_len]
        keys, values = kv.transpose(1, 2)[:, None]  # each [1, kv_heads, context, dim]
        return _sdpa(q.transpose(0, 1)[None], keys, values, scale, mask)[0].transpose(0, 1)

    def _chunk(self, s: SeqSlice) -> tuple[torch.Tensor, torch.Tensor | None]:
        """A prefill chunk's blocks and additive mask, once per forward rather than per layer.

        No mask for a whole prompt at once (plain causal); a later chunk's queries
        sit at the end of its context ("bottom-right" causal).
        """
        device = self.cache.data.device
        blocks = torch.tensor(s.block_table, device=device)
        if s.context_len == s.query_len:
            return blocks, None
        first = s.context_len - s.query_len  # the chunk's first position
        rows = torch.arange(s.query_len, device=device)[:, None] + first
        beyond = torch.arange(s.context_len, device=device)[None, :] > rows
        mask = torch.zeros(beyond.shape, dtype=self.cache.data.dtype, device=device)
        return blocks, mask.masked_fill_(beyond, float("-inf"))


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None,
) -> torch.Tensor:
    """Causal when no mask is given (a prompt attending to itself)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=True
    )
