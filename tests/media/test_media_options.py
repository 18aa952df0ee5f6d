"""MediaOptions and the per-request merge into VideoSampling."""

import pytest
from pydantic import ValidationError

from media import MediaError, MediaOptions, VideoSampling
from media.options import DEFAULT_NUM_FRAMES


def test_yaml_keys_are_kebab_case_and_python_keys_snake_case() -> None:
    from_yaml = MediaOptions(**{"num-frames": 16, "allow-direct-ip": True, "timeout-ms": 500})
    from_python = MediaOptions(num_frames=16, allow_direct_ip=True, timeout_ms=500)
    assert from_yaml == from_python


def test_defaults_follow_the_reference_fetcher() -> None:
    options = MediaOptions()
    assert (options.allow_direct_ip, options.allow_direct_port, options.allow_private_ips) == (
        False,
        False,
        False,
    )
    assert options.timeout_ms == 30_000
    assert options.allowed_media_domains is None
    assert options.allowed_local_media_path is None
    assert options.max_alloc == 512 << 20
    assert options.video_sampling().num_frames == DEFAULT_NUM_FRAMES


def test_unknown_key_is_a_startup_error() -> None:
    with pytest.raises(ValidationError, match="num-framez"):
        MediaOptions(**{"num-framez": 8})


def test_conflicting_defaults_are_a_startup_error() -> None:
    with pytest.raises(ValidationError, match="num_frames-xor-fps"):
        MediaOptions(num_frames=8, fps=2.0)


def test_request_num_frames_replaces_a_server_fps_default() -> None:
    options = MediaOptions(fps=2.0, max_frames=64)
    sampling = options.video_sampling({"num_frames": 16})
    assert (sampling.num_frames, sampling.fps, sampling.max_frames) == (16, None, None)


def test_request_fps_replaces_a_server_num_frames_default_and_keeps_server_cap() -> None:
    assert MediaOptions(num_frames=8).video_sampling({"fps": 1.0}).fps == 1.0
    sampling = MediaOptions(fps=2.0, max_frames=64).video_sampling({"fps": 4.0})
    assert (sampling.fps, sampling.max_frames) == (4.0, 64)
    sampling = MediaOptions(fps=2.0, max_frames=64).video_sampling({"max_frames": 8})
    assert (sampling.fps, sampling.max_frames) == (2.0, 8)


def test_server_max_frames_caps_requests_that_choose_fps() -> None:
    options = MediaOptions(num_frames=8, max_frames=32)
    assert options.video_sampling().max_frames is None
    assert options.video_sampling({"fps": 30.0}).max_frames == 32


def test_no_kwargs_gives_the_server_defaults() -> None:
    sampling = MediaOptions(fps=2.0, max_frames=64, strict=True).video_sampling(None)
    assert sampling == VideoSampling(fps=2.0, max_frames=64, strict=True)


def test_both_modes_in_one_request_is_a_400() -> None:
    with pytest.raises(MediaError) as caught:
        MediaOptions().video_sampling({"num_frames": 8, "fps": 1.0})
    assert (caught.value.rule, caught.value.status) == ("num_frames-xor-fps", 400)
    assert "not both" in str(caught.value)


def test_max_frames_without_fps_is_a_400() -> None:
    with pytest.raises(MediaError, match="max_frames=4 caps fps") as caught:
        MediaOptions(num_frames=8).video_sampling({"max_frames": 4})
    assert caught.value.status == 400
    with pytest.raises(MediaError, match="max_frames=4 caps fps"):
        MediaOptions(fps=2.0).video_sampling({"num_frames": 8, "max_frames": 4})


def test_request_may_lower_limits() -> None:
    sampling = MediaOptions().video_sampling(
        {"max_alloc": 1 << 20, "max_duration_s": 10, "max_sampled_frames": 4, "num_frames": 4}
    )
    assert (sampling.max_alloc, sampling.max_duration_s, sampling.max_sampled_frames) == (
        1 << 20,
        10,
        4,
    )


@pytest.mark.parametrize(
    ("key", "value", "rule"),
    [
        ("max_alloc", 1 << 40, "max-alloc"),
        ("max_duration_s", 10**6, "max-duration-s"),
        ("max_sampled_frames", 10**6, "max-sampled-frames"),
    ],
)
def test_request_may_not_raise_limits(key: str, value: int, rule: str) -> None:
    with pytest.raises(MediaError, match="can only lower") as caught:
        MediaOptions().video_sampling({key: value})
    assert caught.value.rule == rule


def test_num_frames_over_the_frame_limit_is_refused() -> None:
    with pytest.raises(MediaError) as caught:
        MediaOptions(max_sampled_frames=32).video_sampling({"num_frames": 33})
    assert caught.value.rule == "max-sampled-frames"


@pytest.mark.parametrize(
    "kwargs",
    [{"num_frames": 0}, {"fps": -1.0}, {"num_frames": "many"}, {"frames": 8}, {"strict": "maybe"}],
)
def test_malformed_kwargs_are_a_400_naming_the_key(kwargs: dict[str, object]) -> None:
    with pytest.raises(MediaError) as caught:
        MediaOptions().video_sampling(kwargs)
    assert caught.value.rule == "media_io_kwargs"
    assert next(iter(kwargs)) in caught.value.message


def test_disabled_modalities_are_refused() -> None:
    with pytest.raises(MediaError) as caught:
        MediaOptions(enable_video=False).video_sampling({})
    assert caught.value.rule == "enable-video"
    with pytest.raises(MediaError) as caught:
        MediaOptions(enable_image=False).check_enabled("image")
    assert caught.value.rule == "enable-image"
    MediaOptions(enable_video=False).check_enabled("image")


def test_cache_key_is_stable_and_tells_samplings_apart() -> None:
    options = MediaOptions()
    assert options.video_sampling({"num_frames": 8}).cache_key() == (
        MediaOptions().video_sampling({"num_frames": 8}).cache_key()
    )
    keys = {
        options.video_sampling(kwargs).cache_key()
        for kwargs in (
            {"num_frames": 8},
            {"num_frames": 16},
            {"fps": 1.0},
            {"fps": 1.0, "max_frames": 4},
            {"num_frames": 8, "strict": True},
        )
    }
    assert len(keys) == 5


def test_allowed_domains_are_normalised() -> None:
    options = MediaOptions(**{"allowed-media-domains": ["Media.Example.com."]})
    assert options.allowed_media_domains == frozenset({"media.example.com"})
