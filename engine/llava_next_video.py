"""Everything specific to LLaVA-NeXT-Video: loading, video encoding, prompt embedding.

Other model families (Qwen2.5-VL, ...) get a module of their own with the same
three jobs; the engine around them stays the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import AutoProcessor, LlavaNextVideoForConditionalGeneration

from engine.llama import LlamaDecoder


class LlavaNextVideo:
    def __init__(self, model: str | Path, device: torch.device, dtype: torch.dtype) -> None:
        self.processor = AutoProcessor.from_pretrained(model)
        self.hf_model = LlavaNextVideoForConditionalGeneration.from_pretrained(model, dtype=dtype)
        self.hf_model.to(device).eval()
        self.device, self.dtype = device, dtype
        config = self.hf_model.config
        if config.text_config.model_type != "llama":
            raise ValueError(
                f"{model} has a {config.text_config.model_type!r} text model; this engine "
                "runs Llama-based LLaVA-NeXT-Video checkpoints only"
            )
        self.video_token_id: int = config.video_token_id
        self.image_token_id: int = config.image_token_id
        vision = config.vision_config
        pooled_side = vision.image_size // vision.patch_size // config.spatial_pool_stride
        self.tokens_per_frame = pooled_side**2
        self.decoder = LlamaDecoder(self.hf_model.model.language_model, self.hf_model.lm_head)

    @torch.inference_mode()
    def encode_video(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 RGB frames [N, H, W, 3] of any size -> embeddings [video_tokens, hidden].

        Frames go through the checkpoint's own video processor, so resizing and
        normalization are exactly what the model was trained with; then the vision
        tower, LLaVA-NeXT-Video's spatial pooling and the projector.
        """
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise ValueError(
                f"expected uint8 RGB frames [N, H, W, 3], got {frames.dtype} {frames.shape}"
            )
        pixels = self.processor.video_processor(videos=[frames], return_tensors="pt")
        pixels = pixels["pixel_values_videos"].to(self.device, self.dtype)
        features = self.hf_model.model.get_video_features(pixels).pooler_output[0]
        return features.flatten(0, 1)

    def embed_prompt(self, token_ids: list[int], videos: list[torch.Tensor]) -> torch.Tensor:
        """Prompt embeddings [tokens, hidden]; each `<video>` becomes its video's embeddings."""
        ids = torch.tensor(token_ids, device=self.device)
        text = self.decoder.embed_tokens(ids)
        pieces: list[torch.Tensor] = []
        start = 0
        for at, video in zip(_positions(token_ids, self.video_token_id), videos, strict=True):
            pieces += [text[start:at], video.to(self.device, self.dtype)]
            start = at + 1
        pieces.append(text[start:])
        return torch.cat(pieces)

    def num_prompt_tokens(self, token_ids: list[int], videos: list[torch.Tensor]) -> int:
        """The prompt's length once expanded, checking it has one `<video>` per video."""
        if self.image_token_id in token_ids:
            raise ValueError("the prompt holds an <image> token; this engine takes videos only")
        placeholders = len(_positions(token_ids, self.video_token_id))
        if placeholders != len(videos):
            raise ValueError(
                f"the prompt has {placeholders} <video> tokens but {len(videos)} videos were "
                "given; put exactly one <video> in the prompt per video"
            )
        return len(token_ids) - placeholders + sum(video.shape[0] for video in videos)


def _positions(token_ids: list[int], token_id: int) -> list[int]:
    return [i for i, t in enumerate(token_ids) if t == token_id]
