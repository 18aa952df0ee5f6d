"""The reference the video tests compare with: a diffusers Wan pipeline called in this process."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from videogen.mp4 import to_uint8


def load(pipeline_class: Any, path: Path) -> Any:
    """`pipeline_class` (WanPipeline, WanImageToVideoPipeline) from `path`, in float32."""
    pipe = pipeline_class.from_pretrained(path, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def frames(
    pipe: Any, prompt: str, seed: int, size: int, num_frames: int, steps: int, **extra: Any
) -> np.ndarray:
    """uint8 frames of `pipe` run on one thread, as the workers run it; `extra`: e.g. `image`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        out = pipe(
            prompt=prompt,
            height=size,
            width=size,
            num_frames=num_frames,
            num_inference_steps=steps,
            guidance_scale=5.0,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
            **extra,
        )
    finally:
        torch.set_num_threads(threads)
    return to_uint8(out.frames[0])
