"""Frames become an H.264 MP4 that decodes to the same count and size, the same bytes each time."""

from __future__ import annotations

import io
import subprocess
import sys

import av
import numpy as np
import pytest
from PIL import Image

from videogen.mp4 import decode_mp4, encode_mp4, thumbnail, to_uint8


@pytest.fixture
def frames() -> np.ndarray:
    """A moving gradient: smooth enough that H.264 keeps it close."""
    y, x = np.mgrid[0:48, 0:64]
    video = [
        np.stack([(x * 4 + 9 * t) % 256, (y * 5) % 256, np.full_like(x, 40 * t)], -1)
        for t in range(5)
    ]
    return np.array(video, dtype=np.uint8)


def test_the_mp4_is_h264_yuv420p_with_every_frame_at_its_size(frames: np.ndarray) -> None:
    data = encode_mp4(frames, fps=16)
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert (stream.codec_context.name, stream.codec_context.pix_fmt) == ("h264", "yuv420p")
        assert stream.average_rate == 16
    decoded = decode_mp4(data)
    assert decoded.shape == frames.shape
    assert np.abs(decoded.astype(int) - frames).mean() < 8


def test_the_same_frames_give_the_same_bytes_in_another_process(frames: np.ndarray) -> None:
    ours = encode_mp4(frames, fps=16)
    # Uninitialised row padding made about 1 encode in 4 differ; 50 would catch it.
    assert {encode_mp4(frames, fps=16) for _ in range(50)} == {ours}
    script = (
        "import sys, numpy as np; from videogen.mp4 import encode_mp4; "
        "f = np.frombuffer(sys.stdin.buffer.read(), np.uint8).reshape(5, 48, 64, 3); "
        "sys.stdout.buffer.write(encode_mp4(f, fps=16))"
    )
    other = subprocess.run(
        [sys.executable, "-c", script], input=frames.tobytes(), capture_output=True, check=True
    )
    assert other.stdout == ours
    changed = frames.copy()
    changed[2, 10:20, 10:20] = 255
    assert encode_mp4(changed, fps=16) != ours


def test_the_thumbnail_is_the_first_frame_exactly(frames: np.ndarray) -> None:
    image = Image.open(io.BytesIO(thumbnail(frames)))
    assert image.format == "WEBP"
    assert np.array_equal(np.asarray(image.convert("RGB")), frames[0])


def test_float_frames_round_as_diffusers_rounds() -> None:
    assert to_uint8(np.array([0.0, 0.5, 0.999, 1.2, -0.1])).tolist() == [0, 128, 255, 255, 0]
    with pytest.raises(ValueError):
        encode_mp4(np.zeros((2, 16, 16, 3), np.float32), fps=16)
