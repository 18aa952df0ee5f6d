"""Synthetic sample videos for the demo, the graph tests and the benchmarks.

No media can be downloaded here, so every video the project shows itself is
made on the spot: a moving colour pattern whose content depends on `seed`, so
two seeds give two different videos (and, through the model, two different
answers). The same seed always gives the same bytes: the benchmarks' workload
and the tests rebuild a video and expect it to match the one sent earlier.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.container import OutputContainer
from av.video.stream import VideoStream


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


X264_REPRODUCIBLE = {"x264-params": "bframes=0:rc-lookahead=0:mbtree=0"}
"""x264 settings whose output depends on the input only (see `add_reproducible_stream`)."""


def add_reproducible_stream(
    container: OutputContainer,
    codec: str,
    *,
    rate: int,
    width: int,
    height: int,
    pix_fmt: str = "yuv420p",
) -> VideoStream:
    """A video stream that encodes the same frames to the same bytes, every time.

    Feed it frames from `reproducible_frame`. Measured here (PyAV 18, libx264, a
    busy 2-core machine): with x264's defaults the same frames came out as different
    bytes in 1 to 40 encodes of 100, even on one encoder thread (more often under
    load); without B-frames, lookahead and macroblock tree, on one thread, every one
    of thousands of encodes was identical.
    """
    options = X264_REPRODUCIBLE if codec == "libx264" else {}
    stream = container.add_stream(codec, rate=rate, options=options)
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    stream.thread_count = 1
    return stream


def reproducible_frame(pixels: np.ndarray, stream: VideoStream, index: int) -> av.VideoFrame:
    """Frame `index` of `stream`: RGB converted to its pixel format here, on one thread.

    The picture type and timestamp are set because the encoder reads both, and a
    converted frame does not define them.
    """
    frame = _with_zeroed_padding(
        av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(
            format=stream.pix_fmt, threads=1
        )
    )
    frame.pict_type = av.video.frame.PictureType.NONE
    frame.pts, frame.time_base = index, Fraction(1, stream.average_rate)
    return frame


def _with_zeroed_padding(converted: av.VideoFrame) -> av.VideoFrame:
    """A copy of `converted` whose every byte, row padding included, is set.

    PyAV leaves the padding at the end of each plane row uninitialised, and x264
    reads some of it: fed such frames, 1 encode in 4 to 60 came out different here.
    """
    frame = av.VideoFrame(converted.width, converted.height, converted.format.name)
    for source, target in zip(converted.planes, frame.planes, strict=True):
        rows = np.frombuffer(source, np.uint8).reshape(source.height, source.line_size)
        padded = np.zeros((target.height, target.line_size), np.uint8)
        padded[:, : source.width] = rows[:, : source.width]
        target.update(padded.tobytes())
    return frame


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
        pix_fmt = "yuvj420p" if codec == "mjpeg" else "yuv420p"
        stream = add_reproducible_stream(
            container, codec, rate=fps, width=width, height=height, pix_fmt=pix_fmt
        )
        for index, pixels in enumerate(frames):
            container.mux(stream.encode(reproducible_frame(pixels, stream, index)))
        container.mux(stream.encode())
    return path
