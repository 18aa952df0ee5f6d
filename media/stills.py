"""Stills of a video, to be described one by one: frames at a rate, at given times, or keyframes.

Sampling for a video model returns all frames as one array; here the frames
leave one at a time (`Stills.frames()`), so the thousands of keyframes of a
long video are never all in memory: the caller takes the next frame only when
it has room for it. Which frames, and so how many, is known from the packet
index before any is decoded, so a request over its frame limit is refused
first. Each frame goes out as a lossless PNG (`png`), so describing it is
describing exactly these pixels.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from fractions import Fraction

import av
import numpy as np
from PIL import Image

from media.errors import MediaError
from media.frames import FrameIndex, FrameReader
from media.options import VideoSampling
from media.sampling import sample_times
from media.video import _open, _upright_rgb


class Stills:
    """The frames one request picked from a video; close it (or use `with`) when done."""

    def __init__(
        self,
        data: bytes,
        *,
        fps: float | None = None,
        timestamps: list[float] | None = None,
        keyframes: bool = False,
        max_frames: int,
        max_duration_s: float,
    ) -> None:
        try:
            self._container = _open(data)
        except av.error.FFmpegError as error:
            raise MediaError(
                f"the video could not be read ({error.strerror}); send a complete, supported "
                "video file",
                rule="unreadable",
            ) from None
        try:
            if not self._container.streams.video:
                raise MediaError(
                    "the file has no video stream; send a video", rule="no-video-stream"
                )
            self._stream = self._container.streams.video[0]
            self.index = FrameIndex.scan(self._container, self._stream)
            if self.index.duration > max_duration_s:
                raise MediaError(
                    f"the video lasts {float(self.index.duration):.1f} s, over the limit of "
                    f"{max_duration_s:g} s; send a shorter clip",
                    rule="max-duration-s",
                )
            self.picks = self._pick(fps, timestamps, keyframes)
            if len(self.picks) > max_frames:
                raise MediaError(
                    f"this picks {len(self.picks)} frames, over this server's limit of "
                    f"{max_frames} per request; lower fps or split the request "
                    "(server option: frames-max-per-request)",
                    rule="frames-max-per-request",
                    status=413,
                )
        except BaseException:
            self._container.close()
            raise
        self.timestamps = [float(self.index.seconds(pts)) for pts in self.picks]

    def _pick(
        self, fps: float | None, timestamps: list[float] | None, keyframes: bool
    ) -> list[int]:
        """Timestamps (stream time base) of the frames asked for, ascending, each once."""
        if keyframes:
            return list(self.index.keyframes)
        if fps is not None:
            times = sample_times(self.index.duration, VideoSampling(fps=fps))
        else:
            assert timestamps is not None
            past = [t for t in timestamps if t > self.index.duration]
            if past:
                raise MediaError(
                    f"{past[0]:g} s is past the end of the video "
                    f"({float(self.index.duration):.3f} s); ask for times within it",
                    rule="timestamps",
                )
            times = [Fraction(str(t)) for t in timestamps]
        return sorted({self.index.shown_at(t) for t in times})

    def frames(self) -> Iterator[np.ndarray | None]:
        """RGB (H, W, 3) of each pick in order; None for one that could not be decoded."""
        width, height = self._stream.codec_context.width, self._stream.codec_context.height
        reader = FrameReader(self._container, self._stream, self.index, wanted=set(self.picks))
        for pts in self.picks:
            frame = reader.frame(pts)
            yield None if frame is None else _upright_rgb(frame, (width, height), upright=False)

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> Stills:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def png(frame: np.ndarray) -> bytes:
    """A lossless PNG of one RGB frame."""
    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG", compress_level=1)
    return out.getvalue()
