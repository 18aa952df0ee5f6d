"""decode_image: any Pillow format as a one-frame video, upright, within limits."""

import io
import threading

import numpy as np
import pytest
from PIL import Image

import media.image
from media import DecodedVideo, MediaError, MediaOptions, decode_image, decode_image_sync

EXIF_ORIENTATION = 0x0112


def _image_bytes(
    width: int, height: int, fmt: str = "PNG", orientation: int | None = None
) -> bytes:
    """A grey image with a red block in its top-left corner."""
    pixels = np.full((height, width, 3), 128, dtype=np.uint8)
    pixels[: height // 3, : width // 3] = (255, 0, 0)
    image = Image.fromarray(pixels)
    buffer = io.BytesIO()
    if orientation is None:
        image.save(buffer, fmt)
    else:
        exif = Image.Exif()
        exif[EXIF_ORIENTATION] = orientation
        image.save(buffer, fmt, exif=exif, quality=95)
    return buffer.getvalue()


def _red_block(frame: np.ndarray) -> tuple[int, int]:
    """The (row, column) centre of the red block."""
    rows, cols = np.nonzero((frame[..., 0] > 200) & (frame[..., 1] < 60))
    return int(rows.mean()), int(cols.mean())


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_an_image_is_a_one_frame_video(fmt: str) -> None:
    image = decode_image_sync(_image_bytes(33, 17, fmt), MediaOptions())
    assert image.frames.shape == (1, 17, 33, 3)
    assert image.frames.dtype == np.uint8
    assert image.sampled_timestamps == [0.0]
    assert abs(int(image.frames[0, -1, -1, 0]) - 128) <= 4


def test_exif_orientation_turns_the_image_upright() -> None:
    """Orientation 6 means 'rotate 90 degrees clockwise to display'."""
    image = decode_image_sync(_image_bytes(60, 30, "JPEG", orientation=6), MediaOptions())
    frame = image.frames[0]
    assert frame.shape == (60, 30, 3)
    row, col = _red_block(frame)
    assert row < 60 // 2 and col > 30 // 2  # top-left went to top-right


@pytest.mark.parametrize(
    ("options", "rule"),
    [
        (MediaOptions(max_image_width=32), "max-image-width"),
        (MediaOptions(max_image_height=16), "max-image-height"),
        (MediaOptions(max_alloc=33 * 17 * 3 - 1), "max-alloc"),
        (MediaOptions(enable_image=False), "enable-image"),
    ],
)
def test_limits_and_disabled_images_are_refused(options: MediaOptions, rule: str) -> None:
    with pytest.raises(MediaError) as caught:
        decode_image_sync(_image_bytes(33, 17), options)
    assert caught.value.rule == rule


@pytest.mark.parametrize("data", [b"", b"not an image", _image_bytes(40, 40, "PNG")[:60]])
def test_unreadable_images_are_refused(data: bytes) -> None:
    with pytest.raises(MediaError) as caught:
        decode_image_sync(data, MediaOptions())
    assert caught.value.rule == "unreadable"


async def test_decode_image_runs_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads: list[threading.Thread] = []

    def spy(data: bytes, options: MediaOptions) -> DecodedVideo:
        threads.append(threading.current_thread())
        return decode_image_sync(data, options)

    monkeypatch.setattr(media.image, "decode_image_sync", spy)
    image = await decode_image(_image_bytes(8, 8), MediaOptions())
    assert image.frames.shape == (1, 8, 8, 3)
    assert threads and threads[0] is not threading.current_thread()
