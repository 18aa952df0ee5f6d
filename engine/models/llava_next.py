"""LLaVA-NeXT v1.6 (images): a CLIP tower with anyres tiling, a projector, a Mistral or
Vicuna (Llama) decoder. LLaVA-NeXT-Video (`llava_next_video.py`) is this plus videos.

Each image becomes its base tile's features followed by its tiles' features, one
`image_newline` after each row (`anyres.py`), so the token count depends on the
image's size; the prompt holds one `<image>` per image, expanded to that count.
Positions are plain 1-D RoPE: `rope_delta` is 0 and there are no extras.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn
from transformers import AutoConfig, AutoModel, AutoProcessor, GenerationConfig
from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector

from engine.models.anyres import AnyresEncoder
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
TEXT_MODELS = ("llama", "mistral")


class LlavaNext(ModelFamily):
    architectures = ("LlavaNextForConditionalGeneration",)
    projector_class: ClassVar[type[nn.Module]] = LlavaNextMultiModalProjector

    @classmethod
    def load(
        cls,
        path: str | Path,
        device: torch.device,
        dtype: torch.dtype,
        parts: frozenset[Part] = ALL_PARTS,
    ) -> LlavaNext:
        self = cls()
        self.config = config = AutoConfig.from_pretrained(path)
        text = config.text_config
        if text.model_type not in TEXT_MODELS or getattr(text, "sliding_window", None):
            raise ValueError(
                f"{path} has a {text.model_type!r} text model"
                f"{' with a sliding window' if getattr(text, 'sliding_window', None) else ''}; "
                "this engine runs LLaVA-NeXT on Llama (Vicuna) or full-attention Mistral"
            )
        self.processor = AutoProcessor.from_pretrained(path)
        self.device, self.dtype, self.parts = device, dtype, parts
        self.media_token_ids = {"image": config.image_token_id}
        vision = config.vision_config
        self.tokens_per_frame = (vision.image_size // vision.patch_size) ** 2
        self.max_position_embeddings = text.max_position_embeddings
        self.eos_token_ids = eos_token_ids(path, text, self.processor.tokenizer)
        self.kv_spec = None
        modules: dict[str, nn.Module] = {}
        if Part.VISION in parts:
            self.vision_tower = build(lambda: AutoModel.from_config(vision), device, dtype)
            self.projector = build(lambda: cls.projector_class(config), device, dtype)
            self.images = AnyresEncoder(config, self.processor.image_processor, self.vision_tower)
            self.images.load_newline(path, device, dtype)
            modules |= {"vision_tower": self.vision_tower, "projector": self.projector}
        if Part.LANGUAGE in parts:
            self.decoder, language_model, lm_head = LlamaDecoder.build(text, device, dtype)
            modules["language_model"] = language_model
            if not text.tie_word_embeddings:
                modules["lm_head"] = lm_head
            self.kv_spec = self.decoder.kv_spec(dtype)
        modules |= self.load_more(parts)
        load_modules(path, modules, PREFIXES)
        return self

    def load_more(self, parts: frozenset[Part]) -> dict[str, nn.Module]:
        """A subclass's own modules, built empty (LLaVA-NeXT-Video: the video pooler)."""
        return {}

    @torch.inference_mode()
    def encode(
        self, frames: np.ndarray, modality: str = "image", timestamps: list[float] | None = None
    ) -> MediaEmbedding:
        check_frames(frames)
        if modality != "image" or len(frames) != 1:
            raise ValueError(f"{type(self).__name__} takes images only, got a {modality}")
        features = self.images.encode(frames[0], self.project, self.device, self.dtype)
        return MediaEmbedding(features, "image")

    def project(self, features: torch.Tensor) -> torch.Tensor:
        return self.projector(features)

    def expand_prompt(self, token_ids: list[int], media: list[MediaEmbedding]) -> Prompt:
        return expand_placeholders(token_ids, media, self.media_token_ids)

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


def check_frames(frames: np.ndarray) -> None:
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise ValueError(
            f"expected uint8 RGB frames [N, H, W, 3], got {frames.dtype} {frames.shape}"
        )


def expand_placeholders(
    token_ids: list[int], media: list[MediaEmbedding], media_token_ids: dict[str, int]
) -> Prompt:
    """Each media placeholder replaced by its item's tokens (`num_prompt_tokens`), in order.

    Refuses, saying what to send, a prompt whose placeholders do not match the
    media given (count, or modality at each place).
    """
    by_id = {token: modality for modality, token in media_token_ids.items()}
    placeholders = [(i, by_id[t]) for i, t in enumerate(token_ids) if t in by_id]
    kinds = [modality for _, modality in placeholders]
    given = [item.modality for item in media]
    if kinds != given:
        raise ValueError(
            f"the prompt's media placeholders are {kinds or 'none'} but the media given are "
            f"{given or 'none'}; put exactly one placeholder per image or video, in order"
        )
    expanded: list[int] = []
    spans: list[MediaSpan] = []
    start = 0
    for index, ((at, _), item) in enumerate(zip(placeholders, media, strict=True)):
        expanded += token_ids[start:at]
        tokens = item.expansion if item.expansion is not None else [token_ids[at]] * item.num_tokens
        spans.append(MediaSpan(index, len(expanded), len(tokens)))
        expanded += tokens
        start = at + 1
    expanded += token_ids[start:]
    return Prompt(expanded, spans)


def eos_token_ids(path: str | Path, text_config: Any, tokenizer: Any) -> set[int]:
    """The ids that end generation: the generation config's (one or a list) and the tokenizer's."""
    try:
        configured = GenerationConfig.from_pretrained(path).eos_token_id
    except OSError:  # no generation_config.json: the model config's
        configured = text_config.eos_token_id
    ids = set(configured if isinstance(configured, list) else [configured])
    ids.add(tokenizer.eos_token_id)
    return ids - {None}
