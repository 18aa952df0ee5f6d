"""The paged KV tensor, and the format one sequence's KV travels in between processes.

The cache is one tensor `[num_layers, 2, num_blocks, block_size, num_kv_heads,
head_dim]` (2: keys, then values): for each layer, `num_blocks` blocks of
`block_size` tokens, the layout paged kernels (flash-attn's `flash_attn_with_kvcache`)
read. Which block holds which sequence's tokens is `block_manager.py`'s business;
this file only moves tensors: a forward's keys and values into their slots, and a
sequence's blocks out to (or in from) a `SequenceKV`.

`SequenceKV` is one sequence's KV as a single contiguous tensor, the unit of KV
export/import between processes (prefill worker -> decode worker): the prefill
worker gathers it from its blocks, the decode worker scatters it into its own.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.models import KVSpec

KV_LAYOUT = "[num_layers, 2 (0: keys after RoPE, 1: values), num_kv_heads, num_tokens, head_dim]"


@dataclass
class SequenceKV:
    """One sequence's KV cache, contiguous, in the engine's dtype; layout `KV_LAYOUT`.

    It covers the prompt tokens (after `<video>` expansion); the first generated
    token has no KV yet, since the decode step that consumes it writes it.
    """

    data: torch.Tensor
    rope_delta: int = 0
    """Where positions continue after the prompt (`PromptInputs.rope_delta`): it travels
    with the KV, since the decode side cannot recompute it without the media."""

    @property
    def num_tokens(self) -> int:
        return self.data.shape[3]


class KVCache:
    def __init__(
        self, spec: KVSpec, num_blocks: int, block_size: int, device: torch.device
    ) -> None:
        self.spec = spec
        self.block_size = block_size
        self.data = torch.zeros(
            spec.num_layers,
            2,
            num_blocks,
            block_size,
            spec.num_kv_heads,
            spec.head_dim,
            dtype=spec.dtype,
            device=device,
        )

    @property
    def num_blocks(self) -> int:
        return self.data.shape[2]

    def layer(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of one layer, each [num_blocks, block_size, num_kv_heads, head_dim]."""
        return self.data[layer, 0], self.data[layer, 1]

    def gather(self, layer: int, blocks: torch.Tensor) -> torch.Tensor:
        """Keys and values of one layer's `blocks` (int64, any shape), in one copy.

        Shape [2, *blocks.shape, block_size, num_kv_heads, head_dim]. One
        `index_select` for both halves: on CPU it is about twice as fast as
        indexing keys and values apart with an int32 table.
        """
        picked = self.data[layer].index_select(1, blocks.flatten())
        return picked.view(2, *blocks.shape, *self.data.shape[-3:])

    def check_fits(self, kv: SequenceKV) -> None:
        """Refuses, before it is queued, a KV from another model."""
        spec = self.spec
        expected = (spec.num_layers, 2, spec.num_kv_heads, kv.num_tokens, spec.head_dim)
        if tuple(kv.data.shape) != expected:
            raise ValueError(
                f"KV of shape {tuple(kv.data.shape)} does not fit this model, which needs "
                f"{expected} in layout {KV_LAYOUT}; was it exported from another checkpoint?"
            )

    def export(self, block_table: list[int], num_tokens: int, rope_delta: int) -> SequenceKV:
        """A sequence's first `num_tokens` tokens of KV, gathered from its blocks."""
        blocks = torch.tensor(block_table, device=self.data.device)
        layers, _, _, size, heads, dim = self.data.shape
        gathered = self.data[:, :, blocks].reshape(layers, 2, len(block_table) * size, heads, dim)
        data = gathered[:, :, :num_tokens].permute(0, 1, 3, 2, 4).contiguous()
        return SequenceKV(data, rope_delta)

    def load(self, block_table: list[int], kv: SequenceKV) -> None:
        """Writes an imported KV into the sequence's blocks (which cover at least its tokens)."""
        slots = torch.tensor(slot_mapping(block_table, 0, kv.num_tokens, self.block_size))
        tokens = kv.data.to(self.data.device, self.data.dtype).permute(0, 1, 3, 2, 4)
        flat = self.data.view(self.data.shape[0], 2, -1, *self.data.shape[-2:])
        flat[:, :, slots.to(self.data.device)] = tokens


def slot_mapping(block_table: list[int], start: int, end: int, block_size: int) -> list[int]:
    """The cache slot (block * block_size + offset) of each token in [start, end)."""
    return [block_table[p // block_size] * block_size + p % block_size for p in range(start, end)]
