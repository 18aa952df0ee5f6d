"""Decode and sample a video with PyAV: index, check every limit, then decode.

The frame index (`media.frames`) tells which frames the sampling picks before
any is decoded, so the limits on duration, frame count and decoded bytes are
all checked first; only then are the picked frames decoded and turned into one
RGB array.
"""

import asyncio
import io
from fractions import Fraction

import av
import av.container
import numpy as np

from media import qwen_vl
from media.decoded import DecodedVideo
from media.errors import MediaError
from media.frames import FrameIndex, FrameReader
from media.options import VideoSampling
from media.sampling import sample_times


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
    index = FrameIndex.scan(container, stream)
    _check_duration(index.duration, sampling)
    source_fps = float(stream.average_rate or stream.guessed_rate or 0)
    size = (stream.codec_context.width, stream.codec_context.height)
    if size[0] <= 0 or size[1] <= 0:
        raise MediaError(
            "the video stream does not declare its frame size; re-encode the file",
            rule="unreadable",
        )
    # Qwen's size is the upright picture's; otherwise frames keep their stored size.
    upright = sampling.sampler == "qwen-vl"
    if upright:
        picks, size = _qwen_vl_picks(index, source_fps, size, sampling)
    else:
        times = sample_times(index.duration, sampling)
        picks = [index.shown_at(t) for t in times]
    _check_frame_count(len(picks), index.duration, sampling)
    _check_alloc(len(picks), *size, sampling)
    reader = FrameReader(container, stream, index, wanted=set(picks))
    frames, kept = _decode(reader, picks, size, upright, sampling.strict)
    position = {pts: i for i, pts in enumerate(index.pts)}
    return DecodedVideo(
        frames=frames,
        source_fps=source_fps,
        duration=float(index.duration),
        sampled_timestamps=[float(index.seconds(pts)) for pts in kept],
        frame_indices=[position[pts] for pts in kept],
    )


def _qwen_vl_picks(
    index: FrameIndex, source_fps: float, size: tuple[int, int], sampling: VideoSampling
) -> tuple[list[int], tuple[int, int]]:
    """Frames picked and their (width, height), as `qwen-vl-utils` samples.

    The size is computed on the stored size; its rules treat both sides alike,
    so a video stored sideways gets the same size transposed once upright.
    """
    total = len(index.pts)
    fps = source_fps or total / max(float(index.duration), 1e-6)
    count = qwen_vl.num_frames(total, fps, sampling)
    width, height = size
    new_height, new_width = qwen_vl.frame_size(height, width, count, sampling)
    return [index.pts[i] for i in qwen_vl.frame_indices(total, count)], (new_width, new_height)


def _decode(
    reader: FrameReader, picks: list[int], size: tuple[int, int], upright: bool, strict: bool
) -> tuple[np.ndarray, list[int]]:
    """RGB frames for `picks` (timestamps, repeats allowed) and the timestamps kept.

    `size` is (width, height) as stored, or once turned upright if `upright`.
    """
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
        rgb = _upright_rgb(frame, size, upright)
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


def _upright_rgb(frame: av.VideoFrame, size: tuple[int, int], upright: bool) -> np.ndarray:
    """RGB pixels at `size`, turned by the display matrix (counter-clockwise).

    Resizing to an upright size is bicubic, like `qwen-vl-utils`.
    """
    quarter_turns = round(frame.rotation / 90) % 4
    width, height = size[::-1] if upright and quarter_turns % 2 else size
    resize = {"interpolation": "BICUBIC"} if upright else {}
    rgb = frame.to_ndarray(format="rgb24", width=width, height=height, **resize)
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
            f"this sampling picks {count} frames over {float(duration):.1f} s, over the "
            f"limit of {sampling.max_sampled_frames}; lower fps or set max_frames",
            rule="max-sampled-frames",
        )


def _check_alloc(count: int, width: int, height: int, sampling: VideoSampling) -> None:
    size = count * width * height * 3
    if size > sampling.max_alloc:
        raise MediaError(
            f"{count} frames x {width}x{height} x 3 = {_mib(size)} decoded, over the limit "
            f"of {_mib(sampling.max_alloc)}; lower num_frames or fps",
            rule="max-alloc",
        )


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f} MiB"
