"""Decode and sample a video with PyAV: index, check limits, then seek and decode.

One pass over the packets (demuxing only, no decoding) gives every frame's
timestamp and the keyframes. From that index the exact frames to return are
known before anything is decoded, so every limit is checked up front, and each
sampled frame is reached by seeking to the keyframe before it and decoding
forward from there (or from where decoding already is, when that is closer).
On the way, frames that are neither sampled nor referenced by other frames
(most B-frames) are skipped by the decoder.
"""

import asyncio
import io
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container
import numpy as np

from media.decoded import DecodedVideo
from media.errors import MediaError
from media.options import VideoSampling
from media.sampling import frame_shown_at, sample_times


async def decode_video(data: bytes, sampling: VideoSampling) -> DecodedVideo:
    """`decode_video_sync` on a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(decode_video_sync, data, sampling)


def decode_video_sync(data: bytes, sampling: VideoSampling) -> DecodedVideo:
    """Sample `data` (any container/codec FFmpeg reads) as `sampling` says."""
    if not data:
        raise MediaError("the video is empty (0 bytes); send the whole file", rule="empty-media")
    try:
        with _open(data) as container:
            return _sample(container, sampling)
    except av.error.FFmpegError as error:
        raise MediaError(
            f"the video could not be read ({error}); send a complete, supported video file",
            rule="unreadable",
        ) from None


def _open(data: bytes) -> av.container.InputContainer:
    try:
        return av.open(io.BytesIO(data), mode="r")
    except av.error.EOFError:
        raise MediaError(
            "the video ended before its first frame (empty or cut short); send the whole file",
            rule="empty-media",
        ) from None


def _sample(container: av.container.InputContainer, sampling: VideoSampling) -> DecodedVideo:
    if not container.streams.video:
        raise MediaError(
            "the file has no video stream (audio only?); send a video", rule="no-video-stream"
        )
    stream = container.streams.video[0]
    if container.duration is not None:
        _check_duration(Fraction(container.duration, av.time_base), sampling)
    index = _FrameIndex.scan(container, stream, sampling.strict)
    _check_duration(index.duration, sampling)
    times = sample_times(index.duration, sampling)
    _check_frame_count(len(times), index.duration, sampling)
    size = (stream.codec_context.width, stream.codec_context.height)
    _check_alloc(len(times), *size, sampling)
    picks = [index.pts[frame_shown_at(index.pts, index.timestamp(t))] for t in times]
    reader = _FrameReader(container, stream, index, wanted=set(picks))
    frames, kept = _decode(reader, picks, size, sampling.strict)
    return DecodedVideo(
        frames=frames,
        source_fps=float(stream.average_rate or stream.guessed_rate or 0),
        duration=float(index.duration),
        sampled_timestamps=[float(index.seconds(pts)) for pts in kept],
    )


@dataclass(frozen=True)
class _FrameIndex:
    """Every frame's timestamp and the keyframes, read from packets without decoding."""

    pts: list[int]
    """Presentation timestamps (stream time base), ascending."""
    keyframes: list[int]
    time_base: Fraction
    duration: Fraction
    """Seconds from the first frame's start to the last frame's end."""

    def seconds(self, pts: int) -> Fraction:
        """A timestamp as seconds from the first frame."""
        return (pts - self.pts[0]) * self.time_base

    def timestamp(self, seconds: Fraction) -> Fraction:
        """Seconds from the first frame as a (fractional) timestamp, for exact comparisons."""
        return self.pts[0] + seconds / self.time_base

    def keyframe_before(self, pts: int) -> int:
        position = bisect_right(self.keyframes, pts)
        return self.keyframes[position - 1] if position else self.pts[0]

    def frames_between(self, start: int, end: int) -> int:
        """How many frames lie strictly between timestamps `start` and `end`."""
        return bisect_left(self.pts, end) - bisect_right(self.pts, start)

    @classmethod
    def scan(
        cls, container: av.container.InputContainer, stream: av.VideoStream, strict: bool
    ) -> "_FrameIndex":
        """Demux every packet once; a damaged tail is kept out unless `strict` refuses it."""
        packets: list[tuple[int, bool, int]] = []
        try:
            for packet in container.demux(stream):
                if packet.pts is not None:
                    packets.append((packet.pts, packet.is_keyframe, packet.duration or 0))
        except av.error.FFmpegError as error:
            if strict:
                raise MediaError(
                    f"the video is damaged after {len(packets)} frames ({error}); send an "
                    "intact file, or set strict to false to sample what is readable",
                    rule="strict",
                ) from None
        if not packets:
            raise MediaError(
                "the video has no readable frames; send a video with frames", rule="empty-media"
            )
        packets.sort()
        last_pts, _, last_duration = packets[-1]
        return cls(
            pts=[pts for pts, _, _ in packets],
            keyframes=[pts for pts, is_key, _ in packets if is_key],
            time_base=stream.time_base,
            duration=(last_pts + last_duration - packets[0][0]) * stream.time_base,
        )


class _FrameReader:
    """Hands out frames by timestamp, seeking only when that skips frames.

    Seeking lands on the keyframe before the wanted frame. When decoding is
    already at or past that keyframe, or the keyframe is the very next frame,
    decoding on is never slower than seeking (which also flushes the decoder).
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        index: _FrameIndex,
        wanted: set[int],
    ) -> None:
        self._container = container
        self._stream = stream
        self.index = index
        self._wanted = wanted
        self._frames: Iterator[av.VideoFrame] = iter(())
        self._position: int | None = None
        """Timestamp of the last frame decoded, or None when a seek is needed."""
        self._ahead: av.VideoFrame | None = None
        """A frame decoded past the last request, kept for the next one."""
        self.last_error: str | None = None

    def frame(self, pts: int) -> av.VideoFrame | None:
        """The frame with timestamp `pts` (ascending calls), or None if it did not decode."""
        keyframe = self.index.keyframe_before(pts)
        if self._position is None or self.index.frames_between(self._position, keyframe) > 0:
            self._seek(keyframe)
        frame = self._ahead if self._ahead is not None else self._next()
        while frame is not None and frame.pts < pts:
            frame = self._next()
        if frame is None or frame.pts > pts:
            self._ahead = frame
            return None
        self._ahead = None
        return None if frame.is_corrupt else frame

    def _next(self) -> av.VideoFrame | None:
        frame = next(self._frames, None)
        self._position = None if frame is None else frame.pts
        return frame

    def _seek(self, pts: int) -> None:
        self._container.seek(pts, stream=self._stream, backward=True)
        self._frames = self._decode_from_here()
        self._ahead = None

    def _decode_from_here(self) -> Iterator[av.VideoFrame]:
        """Frames with timestamps, in presentation order; a packet that fails is skipped."""
        try:
            for packet in self._container.demux(self._stream):
                # A frame no other frame refers to is only worth decoding if it is wanted.
                wanted = packet.pts in self._wanted
                self._stream.codec_context.skip_frame = "DEFAULT" if wanted else "NONREF"
                try:
                    frames = self._stream.decode(packet)
                except av.error.FFmpegError as error:
                    self.last_error = str(error)
                    continue
                yield from (frame for frame in frames if frame.pts is not None)
        except av.error.FFmpegError as error:
            self.last_error = str(error)


def _decode(
    reader: _FrameReader, picks: list[int], size: tuple[int, int], strict: bool
) -> tuple[np.ndarray, list[int]]:
    """RGB frames for `picks` (timestamps, repeats allowed) and the timestamps kept."""
    slots: dict[int, list[int]] = {}
    for slot, pts in enumerate(picks):
        slots.setdefault(pts, []).append(slot)
    out: np.ndarray | None = None
    decoded = [False] * len(picks)
    for pts in sorted(slots):
        frame = reader.frame(pts)
        if frame is None:
            if strict:
                raise MediaError(
                    f"the frame at {float(reader.index.seconds(pts)):.3f} s could not be decoded "
                    f"({reader.last_error or 'missing'}); send an intact file, or set strict "
                    "to false to drop such frames",
                    rule="strict",
                )
            continue
        rgb = _upright_rgb(frame, size)
        if out is None:
            out = np.empty((len(picks), *rgb.shape), dtype=np.uint8)
        for slot in slots[pts]:
            out[slot] = rgb
            decoded[slot] = True
    if out is None:
        raise MediaError(
            f"none of the {len(picks)} sampled frames could be decoded "
            f"({reader.last_error or 'missing'}); send an intact file",
            rule="unreadable",
        )
    kept = [pts for pts, ok in zip(picks, decoded, strict=True) if ok]
    return (out if all(decoded) else out[decoded]), kept


def _upright_rgb(frame: av.VideoFrame, size: tuple[int, int]) -> np.ndarray:
    """RGB pixels at the declared size, turned by the display matrix (counter-clockwise)."""
    width, height = size
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height)
    quarter_turns = round(frame.rotation / 90) % 4
    return np.rot90(rgb, quarter_turns) if quarter_turns else rgb


def _check_duration(duration: Fraction, sampling: VideoSampling) -> None:
    if duration > sampling.max_duration_s:
        raise MediaError(
            f"the video lasts {float(duration):.1f} s, over the limit of "
            f"{sampling.max_duration_s:g} s; send a shorter clip",
            rule="max-duration-s",
        )


def _check_frame_count(count: int, duration: Fraction, sampling: VideoSampling) -> None:
    if count > sampling.max_sampled_frames:
        raise MediaError(
            f"fps={sampling.fps:g} over {float(duration):.1f} s is {count} frames, over the "
            f"limit of {sampling.max_sampled_frames}; lower fps or set max_frames",
            rule="max-sampled-frames",
        )


def _check_alloc(count: int, width: int, height: int, sampling: VideoSampling) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(
            "the video stream does not declare its frame size; re-encode the file",
            rule="unreadable",
        )
    size = count * width * height * 3
    if size > sampling.max_alloc:
        raise MediaError(
            f"{count} frames x {width}x{height} x 3 = {_mib(size)} decoded, over the limit "
            f"of {_mib(sampling.max_alloc)}; lower num_frames or fps",
            rule="max-alloc",
        )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
