"""KV memory for the running batch, and the format one sequence's KV travels in.

The cache is one tensor `[num_layers, 2, num_slots, num_kv_heads, max_len, head_dim]`
(2: keys, then values). Each running sequence owns one slot, and the slots in use
are always `0..n-1`: when a sequence leaves, the one in the last slot moves into
its place. A decode step for the whole batch then attends over the view
`[:n, :, :longest]` of each layer, with no gather and no copy.

`SequenceKV` is one sequence's KV as a single contiguous tensor, the unit of KV
export/import between processes (prefill worker -> decode worker).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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
        self,
        num_layers: int,
        num_kv_heads: int,
        head_dim: int,
        num_slots: int,
        max_len: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        self.max_len = max_len
        self.num_slots = num_slots
        self.data = torch.zeros(
            num_layers, 2, num_slots, num_kv_heads, max_len, head_dim, dtype=dtype, device=device
        )
        self.request_ids: list[str] = []  # slot i holds request_ids[i]
        self.lengths: list[int] = []  # tokens stored in slot i

    @property
    def num_free_slots(self) -> int:
        return self.num_slots - len(self.request_ids)

    def check_fits(self, kv: SequenceKV) -> None:
        """Refuses, before it is queued, a KV from another model or too long for this cache."""
        layers, _, _, heads, max_len, head_dim = self.data.shape
        expected = (layers, 2, heads, kv.num_tokens, head_dim)
        if tuple(kv.data.shape) != expected:
            raise ValueError(
                f"KV of shape {tuple(kv.data.shape)} does not fit this model, which needs "
                f"{expected} in layout {KV_LAYOUT}; was it exported from another checkpoint?"
            )
        if kv.num_tokens >= max_len:
            raise ValueError(
                f"the KV holds {kv.num_tokens} tokens; max-model-len is {max_len}: "
                "raise it to match the prefill worker's"
            )

    def allocate(self, request_id: str, kv: SequenceKV) -> None:
        """Gives the request the next free slot, filled with its prompt's KV."""
        if not self.num_free_slots:
            raise RuntimeError("no free KV slot: the scheduler admitted more than max_num_seqs")
        slot = len(self.request_ids)
        self.data[:, :, slot, :, : kv.num_tokens] = kv.data.to(self.data.device, self.data.dtype)
        self.request_ids.append(request_id)
        self.lengths.append(kv.num_tokens)

    def free(self, request_id: str) -> None:
        """Releases the request's slot, moving the last slot into it to keep slots dense."""
        slot = self.request_ids.index(request_id)
        last = len(self.request_ids) - 1
        if slot != last:
            length = self.lengths[last]
            self.data[:, :, slot, :, :length] = self.data[:, :, last, :, :length]
            self.request_ids[slot] = self.request_ids[last]
            self.lengths[slot] = length
        self.request_ids.pop()
        self.lengths.pop()

    def write(
        self, layer: int, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor
    ) -> None:
        """Stores one new token per slot; `keys`/`values` are [num_used_slots, heads, head_dim]."""
        slots = torch.arange(len(positions), device=positions.device)
        self.data[layer, 0, slots, :, positions] = keys
        self.data[layer, 1, slots, :, positions] = values

    def view(self, layer: int, num_tokens: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of every used slot, [num_used_slots, heads, num_tokens, head_dim]."""
        used = len(self.request_ids)
        return (
            self.data[layer, 0, :used, :, :num_tokens],
            self.data[layer, 1, :used, :, :num_tokens],
        )

    def advance(self) -> None:
        """Counts the token a decode step has just written into every used slot."""
        self.lengths = [length + 1 for length in self.lengths]
