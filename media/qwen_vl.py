"""Video sampling as `qwen-vl-utils` does it, the way Qwen's own demos feed Qwen3-VL.

Qwen3-VL was trained on videos sampled this way, and its prompt writes each
frame pair's timestamp, so a server that samples differently gives different
answers than the demos. The rules (from `qwen_vl_utils.vision_process`,
`image_patch_size=16`):

- frame count (`smart_nframes`): `num_frames` rounded to a multiple of 2, or
  `duration * fps` (fps default 2.0) clamped to [min_frames, max_frames] (4 and
  768 by default, each rounded inwards to a multiple of 2) and to the frames the
  video has, then floored to a multiple of 2;
- frames picked: `linspace(0, total_frames - 1, n)` rounded (float32, half to
  even, as `torch.linspace(...).round()`);
- frame size (`smart_resize`, factor 32): aspect ratio kept, both sides
  multiples of 32, pixels per frame within [min_pixels, max_pixels], where
  max_pixels is also capped at `total_pixels / n * 2` so the whole video stays
  within `total_pixels`.

The one difference is deliberate: where `qwen-vl-utils` would quietly exceed
`total_pixels` (min_pixels forces frames bigger than the budget allows), this
refuses the video, since the caller set that budget to bound the prompt.
"""

import math

import numpy as np

from media.errors import MediaError
from media.options import VideoSampling

FACTOR = 32
"""Patch 16 x spatial merge 2: frame sides are multiples of this."""
FRAME_FACTOR = 2
"""Temporal patch: frame counts are multiples of this."""
DEFAULT_FPS = 2.0
MIN_FRAMES = 4
MAX_FRAMES = 768
MIN_PIXELS = 128 * FACTOR * FACTOR
MAX_PIXELS = 768 * FACTOR * FACTOR
TOTAL_PIXELS = int(128_000 * FACTOR * FACTOR * 0.9)
MAX_RATIO = 200


def num_frames(total_frames: int, video_fps: float, sampling: VideoSampling) -> int:
    """How many frames to sample (`smart_nframes`)."""
    if sampling.num_frames is not None:
        count = _round_by(sampling.num_frames, FRAME_FACTOR)
    else:
        fps = sampling.fps or DEFAULT_FPS
        low = _ceil_by(sampling.min_frames or MIN_FRAMES, FRAME_FACTOR)
        high = _floor_by(sampling.max_frames or min(MAX_FRAMES, total_frames), FRAME_FACTOR)
        wanted = total_frames / video_fps * fps
        count = _floor_by(min(max(wanted, low), high, total_frames), FRAME_FACTOR)
    if not FRAME_FACTOR <= count <= total_frames:
        raise MediaError(
            f"the video has {total_frames} frames and this sampling picks {count}; Qwen3-VL "
            f"needs between {FRAME_FACTOR} and the video's frame count (multiples of "
            f"{FRAME_FACTOR}): send a longer video or change num_frames/fps/min_frames",
            rule="num-frames",
        )
    return count


def frame_indices(total_frames: int, count: int) -> list[int]:
    """`torch.linspace(0, total_frames - 1, count).round()`: float32, as torch computes it.

    torch fills the first half from the start and the second half back from the
    end, each with one float32 step; rounding is half to even.
    """
    if count == 1:
        return [0]
    start, end = np.float32(0), np.float32(total_frames - 1)
    step = (end - start) / np.float32(count - 1)
    i = np.arange(count)
    halfway = count // 2
    values = np.where(
        i < halfway,
        start + step * i.astype(np.float32),
        end - step * (count - 1 - i).astype(np.float32),
    ).astype(np.float32)
    return [int(v) for v in np.round(values)]


def frame_size(height: int, width: int, count: int, sampling: VideoSampling) -> tuple[int, int]:
    """(height, width) each sampled frame is resized to; refuses a video over `total_pixels`."""
    min_pixels = sampling.min_pixels or MIN_PIXELS
    total_pixels = sampling.total_pixels or TOTAL_PIXELS
    budget = max(min(MAX_PIXELS, total_pixels / count * FRAME_FACTOR), int(min_pixels * 1.05))
    max_pixels = min(sampling.max_pixels or budget, budget)
    new_height, new_width = resize(height, width, min_pixels, max_pixels)
    if not new_height or not new_width:  # smart_resize floors a short side below 32 to 0
        raise MediaError(
            f"{width}x{height} frames fitted into max_pixels={max_pixels} (total_pixels="
            f"{total_pixels} over {count} frames, or max_pixels) leave a side under {FACTOR} "
            "pixels; raise max_pixels or total_pixels, or sample fewer frames",
            rule="total-pixels",
        )
    pixels = count // FRAME_FACTOR * new_height * new_width
    if pixels > total_pixels:
        raise MediaError(
            f"{count} frames of {new_width}x{new_height} (min_pixels={min_pixels}) take "
            f"{pixels} pixels, over total_pixels={total_pixels}; sample fewer frames "
            "(fps, max_frames) or lower min_pixels",
            rule="total-pixels",
        )
    return new_height, new_width


def resize(height: int, width: int, min_pixels: int, max_pixels: int) -> tuple[int, int]:
    """`smart_resize(height, width, factor=32, min_pixels, max_pixels)`."""
    if max(height, width) / min(height, width) > MAX_RATIO:
        raise MediaError(
            f"the video is {width}x{height}; Qwen3-VL takes aspect ratios up to {MAX_RATIO}:1",
            rule="aspect-ratio",
        )
    h_bar = max(FACTOR, _round_by(height, FACTOR))
    w_bar = max(FACTOR, _round_by(width, FACTOR))
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt(height * width / max_pixels)
        h_bar = _floor_by(height / beta, FACTOR)
        w_bar = _floor_by(width / beta, FACTOR)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = _ceil_by(height * beta, FACTOR)
        w_bar = _ceil_by(width * beta, FACTOR)
    return h_bar, w_bar


def _round_by(number: float, factor: int) -> int:
    return round(number / factor) * factor


def _ceil_by(number: float, factor: int) -> int:
    return math.ceil(number / factor) * factor


def _floor_by(number: float, factor: int) -> int:
    return math.floor(number / factor) * factor
