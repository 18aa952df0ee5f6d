"""The contract between the engine and a model family: what a family file must provide.

The engine (scheduler, block manager, KV cache, runner, sampler) knows nothing about
any one model. A family (one file in `engine/models/`, named for its HF `model_type`,
listed in `registry.py`) turns a checkpoint into five jobs:

1. **load** the weights it needs, and only those: the encode worker asks for the
   vision parts (`Part.VISION`), prefill and decode workers for the language parts
   (`Part.LANGUAGE`), an in-process engine for both;
2. **encode media**: uint8 RGB frames -> `MediaEmbedding` (vision tower, projector,
   pooling, and whatever else the family's decoder needs from the media);
3. **expand the prompt**: the chat-templated token ids hold one placeholder per media
   item; the family says how many model tokens each item becomes (`Prompt`);
4. **embed and position the prompt**: `PromptInputs` = input embeddings with the media
   spliced in, positions (1-D, or 3-D for M-RoPE), the `rope_delta` that continues
   them for generated tokens, and per-token extras (e.g. DeepStack features);
5. **forward** a flat batch of tokens from many sequences (prefill chunks and
   decodes mixed) through the decoder, calling the engine's `Attention` once per
   layer; the engine owns the paged KV cache behind it.

Shapes are flat, as in vLLM and nano-vllm: a forward sees `T` tokens, all sequences'
tokens one after another, never a `[batch, tokens]` grid. A family never sees block
tables, slots or sequence boundaries: those live in `engine/attention.py`.

Positions are always `[position_dims, T]` int64. Text-only RoPE families have
`position_dims == 1`. Qwen3-VL's M-RoPE has 3 (temporal, height, width). After the
prompt, a generated token at index `i` of the sequence (prompt tokens included)
gets position `i + rope_delta` in every dimension: the engine computes these for
decode steps, and for recomputed tokens after a preemption, from the `rope_delta`
returned by `embed_prompt`. For a prefill split across steps (chunked prefill), the
engine slices `PromptInputs` along the token dimension, so everything in it must be
per token.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import torch


class Part(Enum):
    """Which weights a process loads. The encode worker never builds the language model."""

    VISION = "vision"  # vision tower, projector, pooling: what `encode` runs
    LANGUAGE = "language"  # token embeddings, decoder layers, norm, lm head: what `forward` runs


ALL_PARTS = frozenset(Part)


@dataclass(frozen=True)
class KVSpec:
    """What one token's KV cache holds: per layer, keys and values of `num_kv_heads` x `head_dim`.

    The engine sizes and allocates the paged cache from this; bytes per token are
    `num_layers * 2 * num_kv_heads * head_dim * dtype.itemsize`.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    dtype: torch.dtype

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * self.dtype.itemsize


@dataclass
class MediaEmbedding:
    """One media item (a video or an image) encoded, as it travels encode -> prefill.

    `embeddings` [num_tokens, hidden] are the rows that replace the item's placeholder
    in the prompt, in order. `features` holds any other per-token tensors the decoder
    needs (dim 0 = num_tokens; e.g. Qwen3-VL's DeepStack features as
    [num_tokens, num_levels, hidden]); they must travel with the embeddings. `grid` is
    the item's (frames, height, width) in merged patches, for families whose positions
    depend on it (M-RoPE); None where they do not. `content_hash` names the item for
    prefix caching (the encode worker's cache key: content hash + sampling parameters
    + model): two items with the same hash must have the same embeddings. When it is
    None the engine hashes the embedding bytes itself.
    """

    embeddings: torch.Tensor
    modality: str = "video"
    features: dict[str, torch.Tensor] = field(default_factory=dict)
    grid: tuple[int, int, int] | None = None
    content_hash: str | None = None
    expansion: list[int] | None = None
    """The token ids that replace the item's placeholder, where they are more than the
    placeholder repeated (Qwen3-VL: each frame pair's timestamp as text around its
    tokens); they come from the decoded media, so they travel with the embeddings."""
    frame_size: tuple[int, int] | None = None
    """(width, height) the frames were sampled at, where the encode worker knows it: what
    it tells the caller, also when the embeddings come from its cache."""
    frames_sampled: int | None = None
    """How many frames were sampled, where the encode worker knows it. The embeddings
    cannot say: a Qwen3-VL frame's token count depends on its size (and two frames
    share each temporal patch)."""

    @property
    def num_tokens(self) -> int:
        return self.embeddings.shape[0]

    @property
    def num_prompt_tokens(self) -> int:
        """Tokens the item takes in the prompt: its expansion, else one per embedding row."""
        return len(self.expansion) if self.expansion is not None else self.num_tokens


@dataclass
class MediaSpan:
    """Where one media item's embeddings sit in the expanded prompt: [start, start + length)."""

    index: int  # which media item (its position in the request's media list)
    start: int
    length: int


@dataclass
class Prompt:
    """A prompt as the model sees it: each placeholder expanded to its item's tokens.

    `token_ids` has one id per model token (an expanded placeholder repeats its
    placeholder id, so two different videos expand to identical ids: the engine adds
    each span's media hash and offset when it hashes KV blocks for prefix caching).
    """

    token_ids: list[int]
    media_spans: list[MediaSpan]


@dataclass
class PromptInputs:
    """What the decoder consumes for a prompt; every tensor has the token dimension T.

    `embeds` [T, hidden]; `positions` [position_dims, T] int64; `extras` per-token
    tensors with dim 0 = T (a family's own, e.g. DeepStack features and their mask),
    where an all-zero row must mean "nothing for this token": the engine pads rows of
    generated tokens (and decode tokens) with zeros when it batches them together.
    `rope_delta` continues the positions after the prompt (see the module docstring).
    """

    embeds: torch.Tensor
    positions: torch.Tensor
    rope_delta: int = 0
    extras: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def num_tokens(self) -> int:
        return self.embeds.shape[0]

    def slice(self, start: int, end: int) -> PromptInputs:
        """Tokens [start, end): one chunk of a chunked prefill."""
        return PromptInputs(
            self.embeds[start:end],
            self.positions[:, start:end],
            self.rope_delta,
            {name: value[start:end] for name, value in self.extras.items()},
        )


class Attention(Protocol):
    """The engine's attention over its paged KV cache, called by the family once per layer.

    `q` [T, num_heads, head_dim], `k`/`v` [T, num_kv_heads, head_dim] for the forward's
    T tokens, keys already rotated (RoPE/M-RoPE applied by the family). The call
    stores `k`/`v` in the cache at each token's slot and returns the attention output
    [T, num_heads, head_dim]: each token attends causally to its own sequence's tokens,
    those cached by earlier steps (or found by prefix caching) and those in this
    forward up to itself. `scale` is the softmax scale (usually head_dim ** -0.5).
    """

    def __call__(
        self, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float
    ) -> torch.Tensor: ...


class ModelFamily(ABC):
    """One model family behind the engine. Subclasses set the class attributes and the
    instance attributes below in `load`, and implement every abstract method.

    Instance attributes (set by `load`):
    - `config`: the HF config; `processor`: the HF processor (its tokenizer is what
      the engine detokenizes with); `device`, `dtype`; `parts`: what was loaded.
    - `kv_spec`: a `KVSpec` (None without `Part.LANGUAGE`).
    - `max_position_embeddings`: the longest context the model takes.
    - `eos_token_ids`: ids that end generation (generation config's and tokenizer's).
    - `media_token_ids`: modality -> placeholder id in the chat-templated prompt
      (`{"video": 3, "image": 4}`); a modality missing here is refused.
    - `tokens_per_frame`: tokens one video frame becomes (for `num_frames` in replies).
    """

    architectures: ClassVar[tuple[str, ...]]  # HF `architectures` entries this file serves
    position_dims: ClassVar[int] = 1
    video_sampler: ClassVar[str] = "uniform"  # how `media` samples its videos (`qwen-vl`)

    config: Any
    processor: Any
    device: torch.device
    dtype: torch.dtype
    parts: frozenset[Part]
    kv_spec: KVSpec | None
    max_position_embeddings: int
    eos_token_ids: set[int]
    media_token_ids: dict[str, int]
    tokens_per_frame: int

    @classmethod
    @abstractmethod
    def load(
        cls,
        path: str | Path,
        device: torch.device,
        dtype: torch.dtype,
        parts: frozenset[Part] = ALL_PARTS,
    ) -> ModelFamily:
        """Builds only the modules of `parts` and loads their weights from the checkpoint.

        Must not construct modules of a part that was not asked for (the encode worker
        is tested to never instantiate a language model); `engine/models/loader.py`
        reads the matching tensors of a safetensors checkpoint by name prefix.
        """

    @abstractmethod
    def encode(
        self, frames: np.ndarray, modality: str = "video", timestamps: list[float] | None = None
    ) -> MediaEmbedding:
        """uint8 RGB frames [N, H, W, 3] (an image: N == 1) -> the item's `MediaEmbedding`.

        `timestamps` are the video frames' times in seconds (`index / source fps`), for
        families that write them into the prompt (Qwen3-VL); others ignore them.

        Runs the checkpoint's own processor (resize, normalize), the vision tower and
        projector. Needs `Part.VISION`. Raises ValueError on frames of the wrong dtype
        or shape.
        """

    @abstractmethod
    def expand_prompt(self, token_ids: list[int], media: list[MediaEmbedding]) -> Prompt:
        """The prompt with each placeholder expanded to its item's token count.

        Media items match placeholders in order. Raises ValueError, saying what to do,
        when the placeholders and the media disagree (count or modality).
        """

    @abstractmethod
    def embed_prompt(self, prompt: Prompt, media: list[MediaEmbedding]) -> PromptInputs:
        """Embeddings (media spliced in at its spans), positions, rope_delta and extras."""

    @abstractmethod
    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Text token ids [T] -> input embeddings [T, hidden] (decode steps, generated tokens)."""

    @abstractmethod
    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        attention: Attention,
        extras: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The decoder over a flat batch: embeds [T, hidden], positions [position_dims, T]
        -> final hidden states [T, hidden] (before the final norm's logits projection is
        applied by `compute_logits`; whether the norm runs here or there is the family's
        choice). `extras` holds the batch's per-token extras (see `PromptInputs`), absent
        keys meaning zeros everywhere.
        """

    @abstractmethod
    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """Hidden states [S, hidden] of the tokens to sample from -> logits [S, vocab]."""
