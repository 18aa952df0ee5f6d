"""Loose requests become valid Wan parameters, or a refusal naming the field."""

from __future__ import annotations

import pytest

from videogen import (
    Defaults,
    ProgressThrottle,
    VideoRequest,
    VideoRequestError,
    resolve_params,
)

DEFAULTS = Defaults(
    default_size="64x48",
    default_fps=16,
    default_num_frames=17,
    default_steps=10,
    max_steps=50,
    max_pixel_frames=256 * 256 * 33,
)


def resolve(**fields):
    return resolve_params(VideoRequest(prompt="a cat", **fields), DEFAULTS)


@pytest.mark.parametrize(
    ("asked", "made"), [(1, 1), (2, 1), (4, 5), (5, 5), (6, 5), (7, 9), (81, 81)]
)
def test_frame_counts_round_to_the_nearest_4k_plus_1(asked: int, made: int) -> None:
    assert resolve(num_frames=asked).num_frames == made


def test_num_frames_wins_over_fps_times_seconds() -> None:
    assert resolve(num_frames=9, fps=8, seconds=4).num_frames == 9
    from_seconds = resolve(fps=8, seconds=2)
    assert (from_seconds.num_frames, from_seconds.fps, from_seconds.seconds) == (17, 8, "2.125")


def test_sizes_round_to_multiples_of_16_and_the_defaults_fill_the_rest() -> None:
    params = resolve(size="30x50")
    assert (params.width, params.height) == (32, 48)
    params = resolve()
    assert (params.width, params.height, params.num_frames, params.num_inference_steps) == (
        64,
        48,
        17,
        10,
    )


def test_a_seed_is_kept_and_a_missing_one_is_chosen_and_reported() -> None:
    assert resolve(seed=1234).seed == 1234
    assert 0 <= resolve().seed < 2**31


@pytest.mark.parametrize(
    ("fields", "param", "status"),
    [
        ({"size": "big"}, "size", 400),
        ({"size": "0x32"}, "size", 400),
        ({"num_frames": 0}, "num_frames", 400),
        ({"seconds": 0}, "seconds", 400),
        ({"fps": 0}, "fps", 400),
        ({"num_inference_steps": 0}, "num_inference_steps", 400),
        ({"num_inference_steps": 51}, "num_inference_steps", 400),
        ({"guidance_scale": -1}, "guidance_scale", 400),
        ({"seed": -1}, "seed", 400),
        ({"size": "512x512", "num_frames": 33}, "size", 413),
        ({"num_frames": 2000}, "num_frames", 413),
    ],
)
def test_what_cannot_be_honoured_is_refused_naming_the_field(fields, param, status) -> None:
    with pytest.raises(VideoRequestError) as refused:
        resolve(**fields)
    assert (refused.value.param, refused.value.status) == (param, status)


def test_progress_is_published_at_most_once_an_interval_but_always_first_and_last() -> None:
    now = [100.0]
    throttle = ProgressThrottle(0.5, clock=lambda: now[0])
    published = []
    for done in range(1, 101):  # 100 steps, 0.125 s apart
        if throttle.due(done, 100):
            published.append(done)
        now[0] += 0.125
    assert published == [*range(1, 100, 4), 100]


def test_fast_steps_publish_only_the_first_and_the_last_and_zero_publishes_every_step() -> None:
    frozen = ProgressThrottle(0.5, clock=lambda: 7.0)
    assert [d for d in range(1, 51) if frozen.due(d, 50)] == [1, 50]
    every = ProgressThrottle(0.0, clock=lambda: 7.0)
    assert [d for d in range(1, 4) if every.due(d, 3)] == [1, 2, 3]
