"""Synthetic sample videos for the demo, the graph tests and the benchmarks.

No media can be downloaded here, so every video the project shows itself is
made on the spot: a moving colour pattern whose content depends on `seed`, so
two seeds give two different videos (and, through the model, two different
answers).
"""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np


def sample_frames(num_frames: int, width: int, height: int, seed: int) -> np.ndarray:
    """(N, H, W, 3) uint8 frames: a gradient that drifts with time, tinted by `seed`."""
    rng = np.random.default_rng(seed)
    tint = rng.integers(0, 256, size=3)
    speed = rng.uniform(1.0, 6.0)
    ys, xs = np.mgrid[0:height, 0:width]
    frames = np.empty((num_frames, height, width, 3), dtype=np.uint8)
    for t in range(num_frames):
        frames[t, ..., 0] = (xs * 255 // max(width - 1, 1) + t * speed + tint[0]) % 256
        frames[t, ..., 1] = (ys * 255 // max(height - 1, 1) + tint[1]) % 256
        frames[t, ..., 2] = ((xs + ys + t * 2 * speed) * 3 + tint[2]) % 256
    return frames


def write_sample_video(
    path: Path,
    *,
    seconds: float = 2.0,
    fps: int = 10,
    width: int = 96,
    height: int = 64,
    seed: int = 0,
    codec: str = "libx264",
) -> Path:
    """Writes an MP4 (or whatever container `path`'s suffix names) and returns `path`."""
    frames = sample_frames(max(int(seconds * fps), 1), width, height, seed)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
