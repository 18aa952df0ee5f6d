"""Qwen3-VL: a ViT with DeepStack, and a Qwen3 decoder with interleaved 3-D M-RoPE.

What sets it apart from the LLaVA families, each handled here:

- **Encoding.** The checkpoint's processors turn frames into 16x16 patches (two
  frames per temporal patch); the ViT merges 2x2 patches into one token and also
  emits one DeepStack feature per token for each of its `deepstack_visual_indexes`
  layers. Those features are added to the hidden states of the first decoder
  layers at the media tokens, so they travel with the embeddings (encode worker ->
  prefill worker) as the `deepstack` feature, [tokens, levels, hidden].
- **Prompt.** A video's placeholder becomes, per frame pair, its timestamp as text
  (`<1.5 seconds>`), `<|vision_start|>`, the pair's tokens and `<|vision_end|>`, as
  `Qwen3VLProcessor` writes it; the encoder returns that expansion
  (`MediaEmbedding.expansion`), since the timestamps come from the decoded video.
- **Positions.** Text tokens count up in all three dimensions; each image or frame
  pair starts at the next position and spreads over height and width. Generated
  tokens continue at `index + rope_delta`, where `rope_delta` (negative: a media
  item takes fewer positions than tokens) comes from the prompt and must go
  wherever the sequence goes (decode step, KV handoff, preemption).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoProcessor
from transformers.models.qwen3_vl.modeling_qwen3_vl import (
    Qwen3VLTextModel,
    Qwen3VLVisionModel,
    apply_rotary_pos_emb,
)
from transformers.video_utils import VideoMetadata

from engine.models.interface import (
    ALL_PARTS,
    Attention,
    KVSpec,
    MediaEmbedding,
    MediaSpan,
    ModelFamily,
    Part,
    Prompt,
    PromptInputs,
)
from engine.models.llava_next import check_frames, eos_token_ids, expand_placeholders
from engine.models.loader import Prefixes, build, load_modules

# Qwen's own checkpoints and `transformers` 5.x saves name the modules alike.
PREFIXES: Prefixes = {
    "visual": ("model.visual.", "visual."),
    "language_model": ("model.language_model.", "language_model."),
    "lm_head": ("lm_head.",),
}
DEEPSTACK = "deepstack"


class Qwen3VL(ModelFamily):
    architectures = ("Qwen3VLForConditionalGeneration",)
    position_dims = 3
    video_sampler = "qwen-vl"

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: torch.device,
        dtype: torch.dtype,
        parts: frozenset[Part] = ALL_PARTS,
    ) -> Qwen3VL:
        self = cls()
        self.config = config = AutoConfig.from_pretrained(path)
        self.processor = AutoProcessor.from_pretrained(path)
        self.device, self.dtype, self.parts = device, dtype, parts
        self.media_token_ids = {"video": config.video_token_id, "image": config.image_token_id}
        self.vision_start_id: int = config.vision_start_token_id
        self.vision_end_id: int = config.vision_end_token_id
        vision, text = config.vision_config, config.text_config
        self.merge = vision.spatial_merge_size
        self.temporal_patch = vision.temporal_patch_size
        # A frame's token count depends on its size here, so no one number is right:
        # the encode worker counts the frames it sampled instead (`frames_sampled`).
        self.tokens_per_frame = 1
        self.max_position_embeddings = text.max_position_embeddings
        self.eos_token_ids = eos_token_ids(path, text, self.processor.tokenizer)
        self.kv_spec = None
        modules = {}
        if Part.VISION in parts:
            self.visual = build(lambda: Qwen3VLVisionModel._from_config(vision), device, dtype)
            modules["visual"] = self.visual
        if Part.LANGUAGE in parts:
            self.language_model = build(lambda: Qwen3VLTextModel._from_config(text), device, dtype)
            self.lm_head = build(
                lambda: torch.nn.Linear(text.hidden_size, text.vocab_size, bias=False),
                device,
                dtype,
            )
            modules["language_model"] = self.language_model
            if config.tie_word_embeddings:
                self.lm_head.weight = self.language_model.embed_tokens.weight
            else:
                modules["lm_head"] = self.lm_head
            self.layers = list(self.language_model.layers)
            self.head_dim: int = text.head_dim
            self.kv_spec = KVSpec(len(self.layers), text.num_key_value_heads, text.head_dim, dtype)
        load_modules(path, modules, PREFIXES)
        return self

    @torch.inference_mode()
    def encode(
        self, frames: np.ndarray, modality: str = "video", timestamps: list[float] | None = None
    ) -> MediaEmbedding:
        """Frames -> merged-patch embeddings, DeepStack features, grid and prompt expansion.

        `timestamps` are each video frame's `index / source fps` in seconds (what
        `VideoMetadata` gives `Qwen3VLProcessor`); without them frames are 0.5 s apart.
        """
        check_frames(frames)
        if modality == "image":
            out = self.processor.image_processor(images=[frames[0]], return_tensors="pt")
            pixels, grid = out["pixel_values"], out["image_grid_thw"]
        else:
            times = timestamps or [i / 2.0 for i in range(len(frames))]
            metadata = VideoMetadata(
                total_num_frames=len(frames), fps=1.0, frames_indices=list(times)
            )
            out = self.processor.video_processor(
                videos=[frames],
                video_metadata=[metadata],
                do_sample_frames=False,
                return_tensors="pt",
            )
            pixels, grid = out["pixel_values_videos"], out["video_grid_thw"]
        vision = self.visual(pixels.to(self.device, self.dtype), grid_thw=grid.to(self.device))
        t, h, w = (int(x) for x in grid[0])
        merged = (t, h // self.merge, w // self.merge)
        return MediaEmbedding(
            vision.pooler_output,
            modality,
            features={DEEPSTACK: torch.stack(vision.deepstack_features, dim=1)},
            grid=merged,
            expansion=self._expansion(modality, merged, times if modality == "video" else []),
        )

    def _expansion(
        self, modality: str, grid: tuple[int, int, int], times: list[float]
    ) -> list[int]:
        """The tokens that replace the placeholder, as `Qwen3VLProcessor` writes them."""
        t, h, w = grid
        if modality == "image":
            return [self.media_token_ids["image"]] * (t * h * w)
        tokenizer = self.processor.tokenizer
        pad = self.media_token_ids["video"]
        expansion: list[int] = []
        for second in _pair_timestamps(times, self.temporal_patch):
            expansion += tokenizer.encode(f"<{second:.1f} seconds>", add_special_tokens=False)
            expansion += [self.vision_start_id, *[pad] * (h * w), self.vision_end_id]
        return expansion

    def expand_prompt(self, token_ids: list[int], media: list[MediaEmbedding]) -> Prompt:
        return expand_placeholders(token_ids, media, self.media_token_ids)

    def embed_prompt(self, prompt: Prompt, media: list[MediaEmbedding]) -> PromptInputs:
        ids = torch.tensor(prompt.token_ids, device=self.device)
        embeds = self.embed_tokens(ids)
        levels = len(self.config.vision_config.deepstack_visual_indexes)
        deepstack = embeds.new_zeros(len(ids), levels, embeds.shape[-1])
        positions = torch.empty(3, len(ids), dtype=torch.long, device=self.device)
        next_position, cursor = 0, 0
        for span in prompt.media_spans:
            item = media[span.index]
            text = span.start - cursor
            positions[:, cursor : span.start] = torch.arange(text) + next_position
            next_position += text
            end = span.start + span.length
            rows = (ids[span.start : end] == self.media_token_ids[item.modality]).nonzero()[:, 0]
            rows += span.start
            embeds[rows] = item.embeddings.to(self.device, self.dtype)
            deepstack[rows] = item.features[DEEPSTACK].to(self.device, self.dtype)
            next_position = self._position_media(positions, span, rows, item, next_position)
            cursor = end
        positions[:, cursor:] = torch.arange(len(ids) - cursor) + next_position
        rope_delta = int(positions.max()) + 1 - len(ids) if len(ids) else 0
        return PromptInputs(embeds, positions, rope_delta, {DEEPSTACK: deepstack})

    def _position_media(
        self,
        positions: torch.Tensor,
        span: MediaSpan,
        rows: torch.Tensor,
        item: MediaEmbedding,
        next_position: int,
    ) -> int:
        """Positions of one item's tokens (text between frame pairs included); returns the next.

        As `Qwen3VLModel.get_rope_index`: a video is split into frame pairs, each an
        image of grid (1, h, w) that starts at the next position; an image's t runs
        over its temporal grid; after either, counting resumes at start + max(h, w).
        """
        assert item.grid is not None
        t, h, w = item.grid
        groups = [(t, h, w)] if item.modality == "image" else [(1, h, w)] * t
        cursor = span.start
        offset = 0
        for gt, gh, gw in groups:
            first = int(rows[offset])
            text = first - cursor
            positions[:, cursor:first] = torch.arange(text) + next_position
            next_position += text
            grid_t, grid_h, grid_w = torch.meshgrid(
                torch.arange(gt), torch.arange(gh), torch.arange(gw), indexing="ij"
            )
            count = gt * gh * gw
            block = torch.stack([grid_t, grid_h, grid_w]).reshape(3, -1) + next_position
            positions[:, first : first + count] = block
            next_position += max(gh, gw)
            cursor = first + count
            offset += count
        end = span.start + span.length
        positions[:, cursor:end] = torch.arange(end - cursor) + next_position
        return next_position + end - cursor

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.language_model.embed_tokens(token_ids)

    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        attention: Attention,
        extras: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        """The Qwen3 layers (q/k RMS norms, M-RoPE) with DeepStack added after the first ones."""
        hidden = embeds
        cos, sin = self.language_model.rotary_emb(hidden, positions[:, None, :])
        cos, sin = cos[0], sin[0]  # [T, head_dim]
        deepstack = extras.get(DEEPSTACK)
        for index, layer in enumerate(self.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            shape = (x.shape[0], -1, self.head_dim)
            q = attn.q_norm(attn.q_proj(x).view(shape))
            k = attn.k_norm(attn.k_proj(x).view(shape))
            v = attn.v_proj(x).view(shape)
            q, k = apply_rotary_pos_emb(q, k, cos, sin, unsqueeze_dim=1)
            out = attention(index, q, k, v, attn.scaling)
            hidden = hidden + attn.o_proj(out.reshape(x.shape[0], -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
            if deepstack is not None and index < deepstack.shape[1]:
                hidden = hidden + deepstack[:, index]
        return hidden

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.language_model.norm(hidden))


def _pair_timestamps(times: list[float], temporal_patch: int) -> list[float]:
    """Each temporal patch's time: the mean of its first and last frame's (the last repeated
    to fill a patch), as `Qwen3VLProcessor._calculate_timestamps` computes it."""
    times = list(times)
    if len(times) % temporal_patch:
        times += [times[-1]] * (temporal_patch - len(times) % temporal_patch)
    return [
        (times[i] + times[i + temporal_patch - 1]) / 2 for i in range(0, len(times), temporal_patch)
    ]
