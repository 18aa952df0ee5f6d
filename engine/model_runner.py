"""Turns scheduled sequences into forward passes: one prompt at a time, the whole batch's decode."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.kv_cache import KVCache, SequenceKV
from engine.models import ModelFamily
from engine.sequence import Sequence


class ModelRunner:
    def __init__(self, model: ModelFamily, kv_cache: KVCache) -> None:
        self.model = model
        self.kv_cache = kv_cache

    @torch.inference_mode()
    def prefill(self, seq: Sequence) -> tuple[torch.Tensor, SequenceKV]:
        """The prompt's last-token logits [vocab] and its KV, which the caller places."""
        media = seq.video_embeddings
        prompt = self.model.expand_prompt(seq.prompt_token_ids, media)
        inputs = self.model.embed_prompt(prompt, media)
        seq.rope_delta = inputs.rope_delta
        spec = self.model.kv_spec
        kv = inputs.embeds.new_empty(
            spec.num_layers, 2, spec.num_kv_heads, inputs.num_tokens, spec.head_dim
        )

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
            kv[layer, 0], kv[layer, 1] = k.transpose(0, 1), v.transpose(0, 1)
            out = _sdpa(q.transpose(0, 1)[None], kv[layer, 0][None], kv[layer, 1][None], scale)
            return out[0].transpose(0, 1)

        hidden = self.model.forward(inputs.embeds, inputs.positions, attend, inputs.extras)
        return self.model.compute_logits(hidden[-1:])[0], SequenceKV(kv, inputs.rope_delta)

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Logits [len(seqs), vocab] for the next token of every running sequence, in one pass.

        The pass runs in cache-slot order and must cover every slot, since the
        cache's slots in use are exactly the running batch. Rows have different
        lengths: each attends to its own tokens only, through a mask over the span
        of the longest row.
        """
        by_id = {seq.request_id: seq for seq in seqs}
        slot_order = self.kv_cache.request_ids
        if set(slot_order) != by_id.keys():
            raise RuntimeError("decode batch and KV cache slots disagree; this is an engine bug")
        device = self.model.device
        token_ids = torch.tensor(
            [by_id[request_id].last_token_id for request_id in slot_order], device=device
        )
        cache = self.kv_cache
        positions = torch.tensor(cache.lengths, device=device)
        deltas = torch.tensor([by_id[request_id].rope_delta for request_id in slot_order])
        rope_positions = (positions + deltas.to(device))[None].expand(self.model.position_dims, -1)
        span = max(cache.lengths) + 1
        visible = torch.arange(span, device=device)[None, :] <= positions[:, None]
        mask = visible[:, None, None, :]

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
            cache.write(layer, positions, k, v)
            keys, values = cache.view(layer, span)
            return _sdpa(q[:, :, None], keys, values, scale, mask)[:, :, 0]

        embeds = self.model.embed_tokens(token_ids)
        hidden = self.model.forward(embeds, rope_positions, attend, {})
        cache.advance()
        logits = self.model.compute_logits(hidden)
        slot_of = {request_id: slot for slot, request_id in enumerate(slot_order)}
        return logits[[slot_of[seq.request_id] for seq in seqs]]


def _sdpa(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Causal when no mask is given (a prompt attending to itself)."""
    return F.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=True
    )
