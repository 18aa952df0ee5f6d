"""The diffusion pipeline: diffusers' Wan, called once per job with a per-step callback.

`generate` blocks for the whole denoising loop, so callers run it in a thread
(the worker's event loop keeps its etcd lease and answers polls meanwhile).
After every step it calls `on_step(done, total)`: that is where progress is
reported, and where a cancelled job stops, by raising out of the loop; there is
no cheaper place to interrupt a diffusion model, and a step is short.

Which Wan is loaded decides what a request may carry: an image-to-video
checkpoint (`WanImageToVideoPipeline`) takes `image`, a text-to-video one does
not. The same seed gives the same frames: noise is drawn from a CPU generator
seeded per job, as diffusers' examples do, and on CPU every job runs with the
same number of threads (float sums depend on it).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from videogen.jobs import GenerationParams
from videogen.mp4 import to_uint8

if TYPE_CHECKING:
    from PIL import Image

StepCallback = Callable[[int, int], None]


class VideoPipeline:
    """One loaded Wan pipeline; one job at a time (diffusers pipelines keep per-call state)."""

    def __init__(self, pipe: Any, cpu_threads: int | None = None) -> None:
        self.pipe = pipe
        self.cpu_threads = cpu_threads
        self.takes_image = type(pipe).__name__ == "WanImageToVideoPipeline"
        if self.takes_image and importlib.util.find_spec("ftfy") is None:
            # diffusers 0.42 calls ftfy on every I2V prompt unguarded: every job would fail.
            raise RuntimeError("an image-to-video Wan needs ftfy (pip install ftfy==6.3.1)")
        self.temporal = pipe.vae_scale_factor_temporal
        self.spatial = pipe.vae_scale_factor_spatial * pipe.transformer.config.patch_size[1]

    @classmethod
    def load(
        cls, path: str | Path, device: str = "cpu", dtype: str = "float32", cpu_threads: int = 1
    ) -> VideoPipeline:
        """A diffusers Wan checkpoint by HF id or local path (its model_index names the class)."""
        import torch
        from diffusers import DiffusionPipeline

        pipe = DiffusionPipeline.from_pretrained(str(path), dtype=getattr(torch, dtype))
        pipe.set_progress_bar_config(disable=True)
        return cls(pipe.to(device), cpu_threads if device == "cpu" else None)

    def generate(
        self,
        params: GenerationParams,
        on_step: StepCallback,
        image: Image.Image | None = None,
    ) -> np.ndarray:
        """The video as uint8 frames (frames x height x width x 3)."""
        import torch

        if self.cpu_threads is not None:
            # Per calling thread (OpenMP's setting is): a pool thread that never set it
            # would use every core, and sum in another order than the last job did.
            torch.set_num_threads(self.cpu_threads)

        def step_end(pipe: Any, step: int, timestep: Any, tensors: dict) -> dict:
            on_step(step + 1, params.num_inference_steps)
            return tensors

        extra = {"image": image} if image is not None else {}
        output = self.pipe(
            prompt=params.prompt,
            negative_prompt=params.negative_prompt,
            height=params.height,
            width=params.width,
            num_frames=params.num_frames,
            num_inference_steps=params.num_inference_steps,
            guidance_scale=params.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(params.seed),
            output_type="np",
            callback_on_step_end=step_end,
            **extra,
        )
        return to_uint8(output.frames[0])
