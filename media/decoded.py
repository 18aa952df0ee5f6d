"""What decoding returns, for videos and images alike."""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class DecodedVideo:
    """Sampled frames plus where they came from; an image is a one-frame video.

    `frames` is uint8 RGB shaped (N, H, W, 3), already turned upright when the
    file carried rotation metadata. `sampled_timestamps` are the timestamps of
    the frames actually returned, in seconds from the first frame, and
    `frame_indices` their positions among the video's frames (Qwen3-VL writes
    `index / source_fps` into its prompt, as its processor does).
    """

    frames: np.ndarray
    source_fps: float
    duration: float
    sampled_timestamps: list[float]
    frame_indices: list[int]
