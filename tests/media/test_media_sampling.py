"""The sampling rules on their own: uniform times and the frame shown at a time."""

from fractions import Fraction as F

import pytest

from media import VideoSampling
from media.sampling import frame_shown_at, sample_times


def test_num_frames_starts_equal_slices() -> None:
    assert sample_times(F(3), VideoSampling(num_frames=4)) == [F(0), F(3, 4), F(3, 2), F(9, 4)]


def test_fps_counts_every_tick_before_the_end() -> None:
    assert sample_times(F(3), VideoSampling(fps=2.0)) == [F(i, 2) for i in range(6)]
    assert len(sample_times(F(31, 10), VideoSampling(fps=2.0))) == 7


def test_fractional_fps_is_exact() -> None:
    times = sample_times(F(10), VideoSampling(fps=0.3))
    assert times == [F(0), F(10, 3), F(20, 3)]


def test_max_frames_turns_fps_into_uniform_sampling_over_the_whole_video() -> None:
    times = sample_times(F(3), VideoSampling(fps=3.0, max_frames=4))
    assert times == sample_times(F(3), VideoSampling(num_frames=4))
    assert sample_times(F(3), VideoSampling(fps=1.0, max_frames=4)) == [F(0), F(1), F(2)]


def test_zero_duration_still_samples_one_frame_at_fps() -> None:
    assert sample_times(F(0), VideoSampling(fps=2.0)) == [F(0)]


@pytest.mark.parametrize(
    ("t", "index"),
    [(F(0), 0), (F(99, 1000), 0), (F(1, 10), 1), (F(15, 100), 1), (F(2, 10), 2), (F(9), 2)],
)
def test_the_frame_shown_at_t_is_the_last_one_at_or_before_t(t: F, index: int) -> None:
    assert frame_shown_at([F(0), F(1, 10), F(2, 10)], t) == index


def test_a_time_before_the_first_frame_maps_to_the_first_frame() -> None:
    assert frame_shown_at([F(1, 10), F(2, 10)], F(0)) == 0
