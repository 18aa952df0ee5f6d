"""The Llama text decoder's forward pass, over HF's modules but with our own KV cache.

HF's `generate()` keeps one cache per batch whose rows share a length. We want
rows of different lengths joining and leaving every step, and a KV layout we can
export, so the attention is ours: HF's projections, RoPE, norms and MLP, with
torch SDPA over our `KVCache`. Everything else is the weights of the checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.llama.modeling_llama import LlamaDecoderLayer, apply_rotary_pos_emb

from engine.kv_cache import KVCache, SequenceKV

# (layer index, queries, keys, values [batch, heads, tokens, head_dim]) -> attention output
Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


class LlamaDecoder:
    def __init__(self, language_model: nn.Module, lm_head: nn.Linear) -> None:
        config = language_model.config
        self.embed_tokens: nn.Embedding = language_model.embed_tokens
        self.layers: list[LlamaDecoderLayer] = list(language_model.layers)
        self.norm = language_model.norm
        self.rotary_emb = language_model.rotary_emb
        self.lm_head = lm_head
        self.num_kv_heads: int = config.num_key_value_heads
        self.head_dim: int = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )

    def prefill(self, embeds: torch.Tensor) -> tuple[torch.Tensor, SequenceKV]:
        """Runs one prompt, embeds [tokens, hidden] -> (last-token logits [vocab], its KV)."""
        num_tokens = embeds.shape[0]
        kv = embeds.new_empty(len(self.layers), 2, self.num_kv_heads, num_tokens, self.head_dim)

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            kv[layer, 0], kv[layer, 1] = k[0], v[0]
            return self._sdpa(layer, q, k, v)

        positions = torch.arange(num_tokens, device=embeds.device)[None]
        hidden = self._forward(embeds[None], positions, attend)
        return self.lm_head(self.norm(hidden[0, -1])), SequenceKV(kv)

    def decode(self, token_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token for every used cache slot, token_ids [slots] -> logits [slots, vocab].

        Rows have different lengths: each attends to its own tokens only, through a
        mask over the span of the longest row.
        """
        positions = torch.tensor(cache.lengths, device=token_ids.device)
        span = max(cache.lengths) + 1
        visible = torch.arange(span, device=token_ids.device)[None, :] <= positions[:, None]
        mask = visible[:, None, None, :]

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            cache.write(layer, positions, k[:, :, 0], v[:, :, 0])
            keys, values = cache.view(layer, span)
            return self._sdpa(layer, q, keys, values, attn_mask=mask)

        hidden = self._forward(self.embed_tokens(token_ids)[:, None], positions[:, None], attend)
        cache.advance()
        return self.lm_head(self.norm(hidden[:, 0]))

    def _forward(
        self, hidden: torch.Tensor, positions: torch.Tensor, attend: Attend
    ) -> torch.Tensor:
        cos, sin = self.rotary_emb(hidden, positions)
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            shape = (*x.shape[:-1], -1, self.head_dim)
            q = attn.q_proj(x).view(shape).transpose(1, 2)
            k = attn.k_proj(x).view(shape).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            out = attend(index, q, k, v).transpose(1, 2).reshape(*x.shape[:-1], -1)
            hidden = hidden + attn.o_proj(out)
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden

    def _sdpa(
        self,
        layer: int,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Causal when no mask is given (a prompt attending to itself)."""
        return F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=attn_mask,
            is_causal=attn_mask is None,
            scale=self.layers[layer].self_attn.scaling,
            enable_gqa=True,
        )
