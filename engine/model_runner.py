"""Turns scheduled sequences into forward passes: one prompt at a time, the whole batch's decode."""

from __future__ import annotations

import torch

from engine.kv_cache import KVCache, SequenceKV
from engine.llava_next_video import LlavaNextVideo
from engine.sequence import Sequence


class ModelRunner:
    def __init__(self, model: LlavaNextVideo, kv_cache: KVCache) -> None:
        self.model = model
        self.kv_cache = kv_cache

    @torch.inference_mode()
    def prefill(self, seq: Sequence) -> tuple[torch.Tensor, SequenceKV]:
        """The prompt's last-token logits [vocab] and its KV, which the caller places."""
        embeds = self.model.embed_prompt(seq.prompt_token_ids, seq.video_embeddings)
        return self.model.decoder.prefill(embeds)

    @torch.inference_mode()
    def decode(self, seqs: list[Sequence]) -> torch.Tensor:
        """Logits [len(seqs), vocab] for the next token of every running sequence, in one pass.

        The pass runs in cache-slot order and must cover every slot, since the
        cache's slots in use are exactly the running batch.
        """
        by_id = {seq.request_id: seq for seq in seqs}
        slot_order = self.kv_cache.request_ids
        if set(slot_order) != by_id.keys():
            raise RuntimeError("decode batch and KV cache slots disagree; this is an engine bug")
        token_ids = torch.tensor(
            [by_id[request_id].last_token_id for request_id in slot_order],
            device=self.model.device,
        )
        logits = self.model.decoder.decode(token_ids, self.kv_cache)
        slot_of = {request_id: slot for slot, request_id in enumerate(slot_order)}
        return logits[[slot_of[seq.request_id] for seq in seqs]]
