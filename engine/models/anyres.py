"""LLaVA-NeXT's anyres image encoding, shared by LLaVA-NeXT and LLaVA-NeXT-Video images.

The image processor picks the `image_grid_pinpoints` entry that fits the image
best, cuts the resized image into tower-sized tiles and adds the whole image
downscaled as a base tile. The tower and projector run on every tile; then the
tiles' features are stitched back into one grid, the padding the fit added is
cut off, and `image_newline` closes each row of the grid, after the base tile's
features (`pack_image_features`, which we call rather than restate).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from torch import nn
from transformers.models.llava_next.modeling_llava_next import LlavaNextModel

from engine.models.loader import checkpoint_files

# `llava-hf` checkpoints, then `transformers` 5.x saves.
IMAGE_NEWLINE_KEYS = ("image_newline", "model.image_newline")


class AnyresEncoder:
    """One image -> its embeddings [tokens, hidden], as `get_image_features` does."""

    def __init__(self, config: Any, image_processor: Any, vision_tower: nn.Module) -> None:
        self.config = config
        self.image_processor = image_processor
        self.vision_tower = vision_tower
        self.image_newline: torch.Tensor | None = None

    def load_newline(self, path: str | Path, device: torch.device, dtype: torch.dtype) -> None:
        """Reads `image_newline` (one vector, not a module, so the loader does not see it)."""
        for file in checkpoint_files(path):
            with safe_open(str(file), framework="pt") as tensors:
                for key in IMAGE_NEWLINE_KEYS:
                    if key in tensors.keys():  # noqa: SIM118 (safe_open is not a mapping)
                        self.image_newline = tensors.get_tensor(key).to(device, dtype)
                        return
        raise ValueError(f"{path} has no image_newline: is it a LLaVA-NeXT checkpoint?")

    @torch.inference_mode()
    def encode(
        self,
        image: np.ndarray,
        project: Callable[[torch.Tensor], torch.Tensor],
        device: torch.device,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """One uint8 RGB image [H, W, 3] -> base tile + tiles + newlines [tokens, hidden]."""
        out = self.image_processor(images=[image], return_tensors="pt")
        pixels = out["pixel_values"][0].to(device, dtype)  # [tiles, 3, size, size]
        tiles = project(tower_features(self.vision_tower, self.config, pixels))
        [packed], _ = LlavaNextModel.pack_image_features(
            SimpleNamespace(config=self.config),
            [tiles],
            out["image_sizes"],
            self.config.vision_feature_select_strategy,
            image_newline=self.image_newline,
        )
        return packed


def tower_features(vision_tower: nn.Module, config: Any, pixels: torch.Tensor) -> torch.Tensor:
    """The tower's `vision_feature_layer` hidden states (concatenated if several), without the
    CLS token under the "default" strategy: what LLaVA-NeXT projects."""
    hidden = vision_tower(pixels, output_hidden_states=True).hidden_states
    layer = config.vision_feature_layer
    features = (
        hidden[layer] if isinstance(layer, int) else torch.cat([hidden[i] for i in layer], -1)
    )
    return features[:, 1:] if config.vision_feature_select_strategy == "default" else features
