"""Where a video is sampled: uniform times, and the frame on screen at each.

The rules, in exact rational arithmetic (no float rounding at frame edges):

- ``num_frames=N`` over a video of duration D samples ``t_i = i * D / N`` for
  i = 0..N-1: the start of N equal slices, so the first frame is always in.
- ``fps=f`` samples ``t_i = i / f`` for every t_i < D (ceil(D * f) times, at
  least one). If that is more than ``max_frames``, it samples
  ``num_frames=max_frames`` instead, so the cap still spans the whole video.
- Time t maps to the frame on screen at t: the last frame whose timestamp is
  <= t. A video with fewer frames than asked for repeats frames, so the count
  asked for is the count returned (unless undecodable frames are dropped).
"""

import math
from bisect import bisect_right
from collections.abc import Sequence
from fractions import Fraction

from media.options import VideoSampling


def sample_times(duration: Fraction, sampling: VideoSampling) -> list[Fraction]:
    """Times in seconds from the first frame, one per frame to sample."""
    if sampling.fps is not None:
        rate = Fraction(str(sampling.fps))
        count = max(1, math.ceil(duration * rate))
        if sampling.max_frames is None or count <= sampling.max_frames:
            return [i / rate for i in range(count)]
        count = sampling.max_frames
    else:
        assert sampling.num_frames is not None  # VideoSampling guarantees one mode
        count = sampling.num_frames
    return [i * duration / count for i in range(count)]


def frame_shown_at(frame_times: Sequence[Fraction | int], t: Fraction) -> int:
    """Index of the frame on screen at `t` among ascending `frame_times` (any one unit)."""
    return max(0, bisect_right(frame_times, t) - 1)
