"""Find frames by timestamp in a video: an index from the packets, and a seeking reader.

Demuxing alone (no decoding) gives every frame's timestamp and the keyframes,
so which frames to return is known before anything is decoded. The reader then
reaches each one by seeking to the keyframe before it, or by decoding on when
that is no slower, and lets the decoder skip frames that are neither wanted nor
referenced by other frames (most B-frames).
"""

from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction

import av
import av.container

from media.errors import MediaError
from media.sampling import frame_shown_at


@dataclass(frozen=True)
class FrameIndex:
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

    def shown_at(self, seconds: Fraction) -> int:
        """Timestamp of the frame on screen `seconds` after the first frame (exact)."""
        return self.pts[frame_shown_at(self.pts, self.pts[0] + seconds / self.time_base)]

    def keyframe_before(self, pts: int) -> int:
        position = bisect_right(self.keyframes, pts)
        return self.keyframes[position - 1] if position else self.pts[0]

    def frames_between(self, start: int, end: int) -> int:
        """How many frames lie strictly between timestamps `start` and `end`."""
        return bisect_left(self.pts, end) - bisect_right(self.pts, start)

    @classmethod
    def scan(cls, container: av.container.InputContainer, stream: av.VideoStream) -> "FrameIndex":
        """Demux every packet once; a file cut short simply indexes what is there."""
        packets = [
            (packet.pts, packet.is_keyframe, packet.duration or 0)
            for packet in container.demux(stream)
            if packet.pts is not None
        ]
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


class FrameReader:
    """Hands out frames by timestamp, seeking only when that skips frames.

    Seeking lands on the keyframe before the wanted frame. When decoding is
    already at or past that keyframe, or the keyframe is the very next frame,
    decoding on is never slower than seeking (which also flushes the decoder).
    """

    def __init__(
        self,
        container: av.container.InputContainer,
        stream: av.VideoStream,
        index: FrameIndex,
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
