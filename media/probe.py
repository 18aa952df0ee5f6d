"""Probe a video: is it one, and what are its size, rate and length, without sampling it.

An upload is checked with this before any worker spends time on it (a file
named `.mp4` proves nothing), and the encode worker reports what it found
with it. Only the container header and the first frame are read.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import av.container

from media.errors import MediaError


@dataclass(frozen=True)
class VideoProbe:
    """The first video stream as a viewer sees it: upright size, frame rate, length."""

    duration_s: float
    fps: float
    width: int
    height: int


def probe_video(source: bytes | Path) -> VideoProbe:
    """The probe of `source` (bytes, or a file path); MediaError when it is no readable video."""
    try:
        with av.open(io.BytesIO(source) if isinstance(source, bytes) else str(source)) as container:
            return _probe(container)
    except av.error.FFmpegError as error:
        raise MediaError(
            f"the file is not a video FFmpeg can read ({error.strerror}); send an MP4, WebM, "
            "MOV or another common video file",
            rule="not-a-video",
        ) from None


def _probe(container: av.container.InputContainer) -> VideoProbe:
    if not container.streams.video:
        raise MediaError(
            "the file has no video stream (audio only, or not a video); send a video",
            rule="no-video-stream",
        )
    stream = container.streams.video[0]
    first = next(container.decode(stream), None)
    if first is None:
        raise MediaError("the video has no decodable frame; send an intact file", rule="unreadable")
    width, height = first.width, first.height
    if round(first.rotation / 90) % 2:
        width, height = height, width
    return VideoProbe(
        duration_s=_duration(container, stream),
        fps=float(stream.average_rate or stream.guessed_rate or 0),
        width=width,
        height=height,
    )


def _duration(container: av.container.InputContainer, stream: av.VideoStream) -> float:
    if container.duration is not None:
        return float(Fraction(container.duration, av.time_base))
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return 0.0
