"""The Llama text decoder over a flat batch of tokens, on HF's modules with our attention.

HF's `generate()` keeps one cache per batch whose rows share a length. We want
sequences of different lengths, prefill chunks and decodes in one forward, and a
paged KV cache we can export, so the attention is the engine's (`Attention`):
HF's projections, RoPE, norms and MLP run as they are, and every layer hands its
queries, keys and values to the engine. Families whose language model is Llama
(LLaVA-NeXT-Video; Mistral-based LLaVA-NeXT has the same layer) build on this.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import AutoModel, LlamaConfig, LlamaModel
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from engine.models.interface import Attention, KVSpec
from engine.models.loader import build


class LlamaDecoder:
    def __init__(self, language_model: LlamaModel, lm_head: nn.Linear) -> None:
        config = language_model.config
        self.embed_tokens: nn.Embedding = language_model.embed_tokens
        self.layers = list(language_model.layers)
        self.norm = language_model.norm
        self.rotary_emb = language_model.rotary_emb
        self.lm_head = lm_head
        self.num_kv_heads: int = config.num_key_value_heads
        self.head_dim: int = getattr(config, "head_dim", None) or (
            config.hidden_size // config.num_attention_heads
        )

    @classmethod
    def build(
        cls, config: LlamaConfig, device: torch.device, dtype: torch.dtype
    ) -> tuple[LlamaDecoder, LlamaModel, nn.Linear]:
        """An empty decoder (weights to be loaded), with the two modules that hold its weights."""
        model = build(lambda: AutoModel.from_config(config), device, dtype)
        lm_head = build(
            lambda: nn.Linear(config.hidden_size, config.vocab_size, bias=False), device, dtype
        )
        if config.tie_word_embeddings:
            lm_head.weight = model.embed_tokens.weight
        return cls(model, lm_head), model, lm_head

    def kv_spec(self, dtype: torch.dtype) -> KVSpec:
        return KVSpec(len(self.layers), self.num_kv_heads, self.head_dim, dtype)

    def forward(
        self, embeds: torch.Tensor, positions: torch.Tensor, attention: Attention
    ) -> torch.Tensor:
        """embeds [T, hidden], positions [1, T] -> hidden states [T, hidden], before the norm."""
        hidden = embeds
        cos, sin = self.rotary_emb(hidden, positions)
        cos, sin = cos[0], sin[0]  # [T, head_dim]
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            shape = (x.shape[0], -1, self.head_dim)
            q = attn.q_proj(x).view(shape)
            k = attn.k_proj(x).view(shape)
            v = attn.v_proj(x).view(shape)
            q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
            out = attention(index, q, k, v, attn.scaling)
            hidden = hidden + attn.o_proj(out.reshape(x.shape[0], -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden))
