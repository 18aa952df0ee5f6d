"""Turns a scheduled step into one forward pass: prefill chunks and decodes, flat, together.

Each scheduled sequence contributes the tokens [num_computed, num_computed +
num_scheduled) of its `token_ids`. Prompt tokens come from the family's
`PromptInputs` (media spliced in, family positions), computed once per prompt and
sliced chunk by chunk; tokens after the prompt (a decode, or generated tokens
recomputed after a preemption) are plain text embeddings at position
`index + rope_delta`. The logits come back only for the sequences whose tokens
reach their end this step: those are the ones that sample.
"""

from __future__ import annotations

import torch

from engine.attention import PagedAttention, SeqSlice
from engine.kv_cache import KVCache
from engine.models import ModelFamily, Prompt, PromptInputs
from engine.sequence import Sequence


class ModelRunner:
    def __init__(self, model: ModelFamily, kv_cache: KVCache) -> None:
        self.model = model
        self.kv_cache = kv_cache

    @torch.inference_mode()
    def run(self, seqs: list[Sequence]) -> tuple[torch.Tensor, list[Sequence]]:
        """Logits [S, vocab] for the S sequences that sample this step, and those sequences.

        Sequences past their prompt (decodes, mostly) go first, embedded in one call;
        then each prompt chunk. Per-token Python work is what a tiny model's decode
        step costs, so it is done once per batch, not per sequence.
        """
        for seq in seqs:
            if seq.kv_to_import:
                assert seq.imported_kv is not None
                self.kv_cache.load(seq.block_table, seq.imported_kv)
                seq.kv_to_import = False
        text = [seq for seq in seqs if seq.num_computed_tokens >= seq.num_prompt_tokens]
        prompts = [seq for seq in seqs if seq.num_computed_tokens < seq.num_prompt_tokens]
        pieces = [self._text_inputs(text)] if text else []
        for seq in prompts:
            pieces += self._inputs(seq)
        ordered = text + prompts
        slices: list[SeqSlice] = []
        start = 0
        for seq in ordered:
            end = seq.num_computed_tokens + seq.num_scheduled_tokens
            slices.append(SeqSlice(start, seq.num_scheduled_tokens, end, seq.block_table))
            start += seq.num_scheduled_tokens
        batch = _concat(pieces)
        attention = PagedAttention(self.kv_cache, slices)
        hidden = self.model.forward(batch.embeds, batch.positions, attention, batch.extras)
        sampling = [seq for seq in ordered if seq.samples_this_step]
        rows = [
            s.query_start + s.query_len - 1
            for s, seq in zip(slices, ordered, strict=True)
            if seq.samples_this_step
        ]
        return self.model.compute_logits(hidden[rows]), sampling

    def _text_inputs(self, seqs: list[Sequence]) -> PromptInputs:
        """Tokens after the prompt of every such sequence: text embeddings, 1-D positions."""
        ids: list[int] = []
        positions: list[int] = []
        for seq in seqs:
            start = seq.num_computed_tokens
            end = start + seq.num_scheduled_tokens
            ids += seq.token_ids[start:end]
            positions += range(start + seq.rope_delta, end + seq.rope_delta)
        device = self.model.device
        embeds = self.model.embed_tokens(torch.tensor(ids, device=device))
        rope = torch.tensor(positions, device=device).expand(self.model.position_dims, -1)
        return PromptInputs(embeds, rope)

    def _inputs(self, seq: Sequence) -> list[PromptInputs]:
        start = seq.num_computed_tokens
        end = start + seq.num_scheduled_tokens
        prompt_end = seq.num_prompt_tokens
        pieces: list[PromptInputs] = []
        if start < prompt_end:
            if seq.prompt_inputs is None:
                prompt = Prompt(seq.token_ids[:prompt_end], seq.media_spans)
                seq.prompt_inputs = self.model.embed_prompt(prompt, seq.media)
                seq.rope_delta = seq.prompt_inputs.rope_delta
            pieces.append(seq.prompt_inputs.slice(start, min(end, prompt_end)))
        first = max(start, prompt_end)
        if first < end:
            device = self.model.device
            ids = torch.tensor(seq.token_ids[first:end], device=device)
            positions = torch.arange(first, end, device=device) + seq.rope_delta
            positions = positions.expand(self.model.position_dims, -1)
            pieces.append(PromptInputs(self.model.embed_tokens(ids), positions))
        return pieces


def _concat(pieces: list[PromptInputs]) -> PromptInputs:
    """One flat batch; an extra missing from a piece is zeros there (see `PromptInputs`)."""
    extras: dict[str, torch.Tensor] = {}
    for name in {name for piece in pieces for name in piece.extras}:
        like = next(piece.extras[name] for piece in pieces if name in piece.extras)
        extras[name] = torch.cat(
            [
                piece.extras.get(name, like.new_zeros(piece.num_tokens, *like.shape[1:]))
                for piece in pieces
            ]
        )
    return PromptInputs(
        torch.cat([piece.embeds for piece in pieces]),
        torch.cat([piece.positions for piece in pieces], dim=1),
        extras=extras,
    )
