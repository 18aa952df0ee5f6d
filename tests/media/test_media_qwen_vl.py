"""The qwen-vl sampler against `qwen-vl-utils` itself, and on real PyAV videos."""

import itertools
from collections.abc import Callable

import pytest
import torch
from qwen_vl_utils.vision_process import smart_nframes, smart_resize

from media import MediaError, MediaOptions, VideoSampling, decode_video_sync, qwen_vl

MakeVideo = Callable[..., bytes]

# (total frames, source fps, request) for the frame count and indices.
NFRAMES_CASES = [
    (total, fps, request)
    for total, fps in [(30, 10.0), (300, 30.0), (251, 29.97), (9, 25.0), (3600, 24.0), (61, 60.0)]
    for request in [
        {},
        {"fps": 1.0},
        {"fps": 4.0, "max_frames": 20},
        {"fps": 0.5, "min_frames": 9},
        {"nframes": 7},
        {"nframes": 16},
    ]
]


def _ours(request: dict[str, float]) -> VideoSampling:
    kwargs = {("num_frames" if key == "nframes" else key): value for key, value in request.items()}
    return MediaOptions().video_sampling(kwargs, family_sampler="qwen-vl")


@pytest.mark.parametrize(("total", "fps", "request_kwargs"), NFRAMES_CASES)
def test_frame_count_and_indices_match_qwen_vl_utils(
    total: int, fps: float, request_kwargs: dict[str, float]
) -> None:
    try:
        expected = smart_nframes(dict(request_kwargs), total_frames=total, video_fps=fps)
    except ValueError:
        with pytest.raises(MediaError):
            qwen_vl.num_frames(total, fps, _ours(request_kwargs))
        return
    count = qwen_vl.num_frames(total, fps, _ours(request_kwargs))
    assert count == expected
    indices = torch.linspace(0, total - 1, count).round().long().tolist()
    assert qwen_vl.frame_indices(total, count) == indices


def test_indices_match_torch_linspace_for_every_small_case() -> None:
    for total, count in itertools.product(range(2, 200), range(2, 40, 2)):
        expected = torch.linspace(0, total - 1, count).round().long().tolist()
        assert qwen_vl.frame_indices(total, count) == expected, (total, count)


@pytest.mark.parametrize(
    ("height", "width", "min_pixels", "max_pixels"),
    [
        (480, 640, qwen_vl.MIN_PIXELS, qwen_vl.MAX_PIXELS),
        (1080, 1920, qwen_vl.MIN_PIXELS, qwen_vl.MAX_PIXELS),
        (2160, 3840, qwen_vl.MIN_PIXELS, 200_000),
        (64, 96, qwen_vl.MIN_PIXELS, qwen_vl.MAX_PIXELS),
        (100, 1000, 4096, 50_000),
        (37, 53, 1024, 10_000),
        (720, 1280, 1024, 1_000_000),
    ],
)
def test_frame_size_matches_smart_resize(
    height: int, width: int, min_pixels: int, max_pixels: int
) -> None:
    expected = smart_resize(height, width, 32, min_pixels, max_pixels)
    assert qwen_vl.resize(height, width, min_pixels, max_pixels) == expected


@pytest.mark.parametrize(
    ("height", "width", "count", "total_pixels"),
    [
        (480, 640, 8, None),
        (1080, 1920, 64, None),
        (1080, 1920, 64, 4_000_000),
        (360, 640, 4, 10**6),
    ],
)
def test_per_frame_budget_follows_fetch_video(
    height: int, width: int, count: int, total_pixels: int | None
) -> None:
    """`fetch_video` caps max_pixels at total_pixels / frames * 2, never below min_pixels * 1.05."""
    total = total_pixels or qwen_vl.TOTAL_PIXELS
    budget = max(min(qwen_vl.MAX_PIXELS, total / count * 2), int(qwen_vl.MIN_PIXELS * 1.05))
    expected = smart_resize(height, width, 32, qwen_vl.MIN_PIXELS, budget)
    sampling = _ours({} if total_pixels is None else {"total_pixels": total_pixels})
    assert qwen_vl.frame_size(height, width, count, sampling) == expected


def test_a_video_over_total_pixels_is_refused_naming_the_limit() -> None:
    with pytest.raises(MediaError) as caught:
        qwen_vl.frame_size(480, 640, 64, _ours({"total_pixels": 100_000}))
    assert caught.value.rule == "total-pixels"
    assert "total_pixels=100000" in caught.value.message


def test_a_budget_too_small_for_one_side_of_32_is_refused_naming_it() -> None:
    """smart_resize floors such a side to 0 (qwen-vl-utils then fails inside PIL)."""
    sampling = _ours({"min_pixels": 1024, "max_pixels": 4096, "total_pixels": 3000})
    assert smart_resize(64, 96, 32, 1024, 1075)[0] == 0
    with pytest.raises(MediaError) as caught:
        qwen_vl.frame_size(64, 96, 6, sampling)
    assert caught.value.rule == "total-pixels"
    assert "total_pixels=3000" in caught.value.message


def test_decoding_resizes_to_multiples_of_32_and_picks_qwen_frames(make_video: MakeVideo) -> None:
    data = make_video(frames=30, fps=10, width=96, height=64)
    sampling = _ours({"fps": 2.0, "min_pixels": 4096, "max_pixels": 8192})
    video = decode_video_sync(data, sampling)
    expected_count = smart_nframes({"fps": 2.0}, total_frames=30, video_fps=10.0)
    height, width = smart_resize(64, 96, 32, 4096, 8192)
    assert video.frames.shape == (expected_count, height, width, 3)
    assert video.frame_indices == torch.linspace(0, 29, expected_count).round().long().tolist()
    assert video.source_fps == 10.0


def test_qwen_only_keys_are_refused_by_the_uniform_sampler() -> None:
    with pytest.raises(MediaError) as caught:
        MediaOptions().video_sampling({"total_pixels": 1000})
    assert caught.value.rule == "media_io_kwargs"
    assert "total_pixels" in caught.value.message


def test_qwen_sampler_defaults_to_two_frames_a_second() -> None:
    assert _ours({}).fps == 2.0
    assert MediaOptions(video_sampler="qwen-vl").video_sampling().fps == 2.0
    assert (
        MediaOptions(**{"fps": 1.0, "total-pixels": 10**6})
        .video_sampling(family_sampler="qwen-vl")
        .total_pixels
        == 10**6
    )
