"""LLaVA-NeXT-Video: a CLIP tower, 2x2 average pooling and a projector, before a Llama decoder.

Each video frame becomes `tokens_per_frame` embeddings (144 for the 7B checkpoint:
a 24x24 patch grid pooled to 12x12); a prompt holds one `<video>` placeholder per
video, which expands to all of its frames' embeddings. Positions are plain 1-D
RoPE, so `rope_delta` is always 0 and there are no extras.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor, GenerationConfig
from transformers.models.llava_next_video.modeling_llava_next_video import (
    LlavaNextVideoMultiModalProjector,
    LlavaNextVideoPooler,
)

from engine.models.interface import (
    ALL_PARTS,
    Attention,
    MediaEmbedding,
    MediaSpan,
    ModelFamily,
    Part,
    Prompt,
    PromptInputs,
)
from engine.models.llama import LlamaDecoder
from engine.models.loader import Prefixes, build, load_modules

# Where each module's tensors live: `llava-hf` checkpoints, then `transformers` 5.x saves.
PREFIXES: Prefixes = {
    "vision_tower": (
        "vision_tower.vision_model.",
        "vision_tower.",
        "model.vision_tower.vision_model.",
        "model.vision_tower.",
    ),
    "vision_resampler": ("vision_resampler.", "model.vision_resampler."),
    "projector": ("multi_modal_projector.", "model.multi_modal_projector."),
    "language_model": ("language_model.model.", "model.language_model."),
    "lm_head": ("language_model.lm_head.", "lm_head."),
}


class LlavaNextVideo(ModelFamily):
    architectures = ("LlavaNextVideoForConditionalGeneration",)

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: torch.device,
        dtype: torch.dtype,
        parts: frozenset[Part] = ALL_PARTS,
    ) -> LlavaNextVideo:
        self = cls()
        self.config = config = AutoConfig.from_pretrained(path)
        if config.text_config.model_type != "llama":
            raise ValueError(
                f"{path} has a {config.text_config.model_type!r} text model; this engine "
                "runs Llama-based LLaVA-NeXT-Video checkpoints only"
            )
        self.processor = AutoProcessor.from_pretrained(path)
        self.device, self.dtype, self.parts = device, dtype, parts
        self.media_token_ids = {"video": config.video_token_id}
        self.image_token_id: int = config.image_token_id
        vision = config.vision_config
        pooled_side = vision.image_size // vision.patch_size // config.spatial_pool_stride
        self.tokens_per_frame = pooled_side**2
        self.max_position_embeddings = config.text_config.max_position_embeddings
        self.eos_token_ids = _eos_token_ids(path, config, self.processor.tokenizer)
        self.kv_spec = None
        modules = {}
        if Part.VISION in parts:
            self.vision_tower = build(lambda: AutoModel.from_config(vision), device, dtype)
            self.vision_resampler = build(lambda: LlavaNextVideoPooler(config), device, dtype)
            self.projector = build(lambda: LlavaNextVideoMultiModalProjector(config), device, dtype)
            modules |= {
                "vision_tower": self.vision_tower,
                "vision_resampler": self.vision_resampler,
                "projector": self.projector,
            }
        if Part.LANGUAGE in parts:
            self.decoder, language_model, lm_head = LlamaDecoder.build(
                config.text_config, device, dtype
            )
            modules["language_model"] = language_model
            if not config.text_config.tie_word_embeddings:
                modules["lm_head"] = lm_head
            self.kv_spec = self.decoder.kv_spec(dtype)
        load_modules(path, modules, PREFIXES)
        return self

    @torch.inference_mode()
    def encode(self, frames: np.ndarray, modality: str = "video") -> MediaEmbedding:
        """Frames through the checkpoint's own video processor, the tower, pooling, projector.

        Resizing and normalization are exactly what the model was trained with. The
        features come from the tower's `vision_feature_layer` hidden states, without the
        CLS token under the "default" strategy, as `get_video_features` does.
        """
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 RGB frames [N, H, W, 3], got {frames.dtype} {frames.shape}"
            )
        pixels = self.processor.video_processor(videos=[frames], return_tensors="pt")
        pixels = pixels["pixel_values_videos"][0].to(self.device, self.dtype)
        hidden = self.vision_tower(pixels, output_hidden_states=True).hidden_states
        layer = self.config.vision_feature_layer
        if isinstance(layer, int):
            features = hidden[layer]
        else:
            features = torch.cat([hidden[i] for i in layer], dim=-1)
        if self.config.vision_feature_select_strategy == "default":
            features = features[:, 1:]
        features = self.projector(self.vision_resampler(features))
        return MediaEmbedding(features.flatten(0, 1), modality)

    def expand_prompt(self, token_ids: list[int], media: list[MediaEmbedding]) -> Prompt:
        if self.image_token_id in token_ids:
            raise ValueError("the prompt holds an <image> token; this engine takes videos only")
        video_id = self.media_token_ids["video"]
        placeholders = [i for i, t in enumerate(token_ids) if t == video_id]
        if len(placeholders) != len(media):
            raise ValueError(
                f"the prompt has {len(placeholders)} <video> tokens but {len(media)} videos "
                "were given; put exactly one <video> in the prompt per video"
            )
        expanded: list[int] = []
        spans: list[MediaSpan] = []
        start = 0
        for index, (at, item) in enumerate(zip(placeholders, media, strict=True)):
            expanded += token_ids[start:at]
            spans.append(MediaSpan(index, len(expanded), item.num_tokens))
            expanded += [video_id] * item.num_tokens
            start = at + 1
        expanded += token_ids[start:]
        return Prompt(expanded, spans)

    def embed_prompt(self, prompt: Prompt, media: list[MediaEmbedding]) -> PromptInputs:
        ids = torch.tensor(prompt.token_ids, device=self.device)
        embeds = self.decoder.embed_tokens(ids)
        for span in prompt.media_spans:
            rows = media[span.index].embeddings.to(self.device, self.dtype)
            embeds[span.start : span.start + span.length] = rows
        positions = torch.arange(len(prompt.token_ids), device=self.device)[None]
        return PromptInputs(embeds, positions)

    def embed_tokens(self, token_ids: torch.Tensor) -> torch.Tensor:
        return self.decoder.embed_tokens(token_ids)

    def forward(
        self,
        embeds: torch.Tensor,
        positions: torch.Tensor,
        attention: Attention,
        extras: dict[str, torch.Tensor],
    ) -> torch.Tensor:
        return self.decoder.forward(embeds, positions, attention)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.decoder.compute_logits(hidden)


def _eos_token_ids(path: str | Path, config, tokenizer) -> set[int]:
    """The ids that end generation: the generation config's (one or a list) and the tokenizer's."""
    try:
        configured = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # no generation_config.json: the model config's
        configured = config.text_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return ids - {None}
