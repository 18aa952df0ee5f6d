"""Decode an image (any format Pillow reads) as a one-frame video."""

import asyncio
import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from media.decoded import DecodedVideo
from media.errors import MediaError
from media.options import MediaOptions


async def decode_image(data: bytes, options: MediaOptions) -> DecodedVideo:
    """`decode_image_sync` on a worker thread, so the event loop keeps serving."""
    return await asyncio.to_thread(decode_image_sync, data, options)


def decode_image_sync(data: bytes, options: MediaOptions) -> DecodedVideo:
    """RGB pixels of `data`, upright per its EXIF orientation; the first frame if animated.

    The size limits are checked on the header, before the pixels are decoded.
    """
    options.check_enabled("image")
    try:
        with Image.open(io.BytesIO(data)) as image:
            _check_size(*image.size, options)
            upright = ImageOps.exif_transpose(image).convert("RGB")
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError) as error:
        raise MediaError(
            f"the image could not be read ({error}); send a complete PNG, JPEG or WebP file",
            rule="unreadable",
        ) from None
    frames = np.asarray(upright, dtype=np.uint8)[np.newaxis]
    return DecodedVideo(
        frames=frames, source_fps=0.0, duration=0.0, sampled_timestamps=[0.0], frame_indices=[0]
    )


def _check_size(width: int, height: int, options: MediaOptions) -> None:
    for side, value, limit in (
        ("width", width, options.max_image_width),
        ("height", height, options.max_image_height),
    ):
        if value > limit:
            raise MediaError(
                f"the image is {width}x{height}, its {side} over the limit of {limit} pixels; "
                "send a smaller image",
                rule=f"max-image-{side}",
            )
    size = width * height * 3
    if size > options.max_alloc:
        raise MediaError(
            f"the image is {width}x{height} x 3 = {size} bytes decoded, over the limit of "
            f"{options.max_alloc} bytes; send a smaller image",
            rule="max-alloc",
        )
