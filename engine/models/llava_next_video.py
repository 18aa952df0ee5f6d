"""LLaVA-NeXT-Video: LLaVA-NeXT (`llava_next.py`) plus videos, pooled 2x2 per frame.

Each video frame becomes `tokens_per_frame` embeddings (144 for the 7B checkpoint:
a 24x24 patch grid pooled to 12x12); a prompt holds one `<video>` placeholder per
video, which expands to all of its frames' embeddings. Images take LLaVA-NeXT's
anyres path (base tile + tiles + `image_newline`), as `generate()` does with
`pixel_values`, not a one-frame video. Positions are plain 1-D RoPE.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers.models.llava_next_video.modeling_llava_next_video import (
    LlavaNextVideoMultiModalProjector,
    LlavaNextVideoPooler,
)

from engine.models.anyres import tower_features
from engine.models.interface import MediaEmbedding, Part
from engine.models.llava_next import LlavaNext, check_frames
from engine.models.loader import build


class LlavaNextVideo(LlavaNext):
    architectures = ("LlavaNextVideoForConditionalGeneration",)
    projector_class = LlavaNextVideoMultiModalProjector

    def load_more(self, parts: frozenset[Part]) -> dict[str, nn.Module]:
        config = self.config
        self.media_token_ids["video"] = config.video_token_id
        vision = config.vision_config
        self.tokens_per_frame = (
            vision.image_size // vision.patch_size // config.spatial_pool_stride
        ) ** 2
        if Part.VISION not in parts:
            return {}
        self.vision_resampler = build(lambda: LlavaNextVideoPooler(config), self.device, self.dtype)
        return {"vision_resampler": self.vision_resampler}

    @torch.inference_mode()
    def encode(
        self, frames: np.ndarray, modality: str = "video", timestamps: list[float] | None = None
    ) -> MediaEmbedding:
        """A video: frames through the checkpoint's own video processor, the tower, pooling
        and projector, as `get_video_features` does. An image: LLaVA-NeXT's anyres path."""
        check_frames(frames)
        if modality == "image":
            return super().encode(frames[:1], "image")
        pixels = self.processor.video_processor(videos=[frames], return_tensors="pt")
        pixels = pixels["pixel_values_videos"][0].to(self.device, self.dtype)
        features = tower_features(self.vision_tower, self.config, pixels)
        features = self.projector(self.vision_resampler(features))
        return MediaEmbedding(features.flatten(0, 1), "video")
