"""decode_video on real videos made with PyAV: exact sampling, orientation, damage, limits."""

import io
import threading
from collections.abc import Callable

import av
import numpy as np
import pytest

import media.video
from media import DecodedVideo, MediaError, VideoSampling, decode_video, decode_video_sync

CODECS = [
    ("libx264", "mp4", "yuv420p"),
    ("libvpx-vp9", "webm", "yuv420p"),
    ("mjpeg", "matroska", "yuvj420p"),
]
MakeVideo = Callable[..., bytes]
Levels = Callable[[np.ndarray], list[int]]


def _garble_packet(data: bytes, index: int) -> bytes:
    """Overwrite the middle of the `index`-th video packet so that frame cannot decode."""
    with av.open(io.BytesIO(data)) as container:
        packets = [p for p in container.demux(video=0) if p.size]
        position, size = packets[index].pos, packets[index].size
    garbled = bytearray(data)
    garbled[position + size // 2 : position + size // 2 + 50] = b"\xff" * 50
    return bytes(garbled)


@pytest.mark.parametrize(("codec", "container", "pix_fmt"), CODECS)
def test_num_frames_samples_the_start_of_equal_slices(
    make_video: MakeVideo, frame_levels: Levels, codec: str, container: str, pix_fmt: str
) -> None:
    video = decode_video_sync(
        make_video(codec, container, pix_fmt=pix_fmt), VideoSampling(num_frames=4)
    )
    # 3 s at 10 fps: t = 0, 0.75, 1.5, 2.25 -> frames on screen 0, 7, 15, 22
    assert video.sampled_timestamps == pytest.approx([0.0, 0.7, 1.5, 2.2])
    assert frame_levels(video.frames) == [0, 7, 15, 22]
    assert video.frames.shape == (4, 48, 64, 3)
    assert video.frames.dtype == np.uint8
    assert (video.source_fps, video.duration) == (10.0, 3.0)


@pytest.mark.parametrize(("codec", "container", "pix_fmt"), CODECS)
def test_fps_samples_every_tick(
    make_video: MakeVideo, frame_levels: Levels, codec: str, container: str, pix_fmt: str
) -> None:
    video = decode_video_sync(make_video(codec, container, pix_fmt=pix_fmt), VideoSampling(fps=2))
    assert video.sampled_timestamps == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0, 2.5])
    assert frame_levels(video.frames) == [0, 5, 10, 15, 20, 25]


def test_fps_over_max_frames_spreads_the_cap_over_the_whole_video(
    mp4_video: bytes, frame_levels: Levels
) -> None:
    video = decode_video_sync(mp4_video, VideoSampling(fps=5, max_frames=3))
    assert video.sampled_timestamps == pytest.approx([0.0, 1.0, 2.0])
    assert frame_levels(video.frames) == [0, 10, 20]


def test_more_frames_than_the_video_has_repeats_frames(make_video: MakeVideo) -> None:
    video = decode_video_sync(make_video(frames=3), VideoSampling(num_frames=6))
    assert video.sampled_timestamps == pytest.approx([0.0, 0.0, 0.1, 0.1, 0.2, 0.2])
    assert len(video.frames) == 6


def test_every_frame_of_a_long_gop_comes_out_in_order(make_video: MakeVideo) -> None:
    """Dense sampling decodes forward through one GOP instead of seeking per frame."""
    data = make_video(frames=30)
    video = decode_video_sync(data, VideoSampling(num_frames=30))
    with av.open(io.BytesIO(data)) as container:
        every = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    np.testing.assert_array_equal(video.frames, every)


@pytest.mark.parametrize(
    "sampling",
    [VideoSampling(num_frames=3), VideoSampling(num_frames=7), VideoSampling(fps=4)],
    ids=str,
)
def test_seeking_across_keyframes_returns_the_same_pixels_as_decoding_everything(
    make_video: MakeVideo, sampling: VideoSampling
) -> None:
    data = make_video(frames=40, gop=6)
    with av.open(io.BytesIO(data)) as container:
        assert sum(p.is_keyframe for p in container.demux(video=0)) >= 6
    with av.open(io.BytesIO(data)) as container:
        every = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])
    video = decode_video_sync(data, sampling)
    indices = [round(t * 10) for t in video.sampled_timestamps]
    np.testing.assert_array_equal(video.frames, every[indices])


def test_variable_frame_rate_picks_the_frame_on_screen(
    make_video: MakeVideo, frame_levels: Levels
) -> None:
    data = make_video("libx264", "matroska", frames=6, pts_ms=[0, 100, 150, 500, 1200, 1300])
    video = decode_video_sync(data, VideoSampling(num_frames=7))
    # the last frame lasts 100 ms, so 1.4 s: t = 0, 0.2, ..., 1.2
    assert video.duration == pytest.approx(1.4)
    assert video.sampled_timestamps == pytest.approx([0.0, 0.15, 0.15, 0.5, 0.5, 0.5, 1.2])
    assert frame_levels(video.frames) == [0, 2, 2, 3, 3, 3, 4]


@pytest.mark.parametrize(
    ("codec", "container", "pix_fmt"),
    [("libx264", "mp4", "yuv444p"), ("libvpx-vp9", "webm", "yuv420p"), CODECS[2]],
)
def test_odd_frame_sizes_keep_their_size(
    make_video: MakeVideo, frame_levels: Levels, codec: str, container: str, pix_fmt: str
) -> None:
    data = make_video(codec, container, width=33, height=17, pix_fmt=pix_fmt)
    video = decode_video_sync(data, VideoSampling(num_frames=3))
    assert video.frames.shape == (3, 17, 33, 3)
    assert frame_levels(video.frames) == [0, 10, 20]


@pytest.mark.parametrize("degrees", [90, -90, 180])
def test_rotation_metadata_turns_frames_upright(make_video: MakeVideo, degrees: int) -> None:
    plain = decode_video_sync(make_video(marker=True), VideoSampling(num_frames=2)).frames
    turned = decode_video_sync(
        make_video(marker=True, rotation=degrees), VideoSampling(num_frames=2)
    ).frames
    np.testing.assert_array_equal(turned, np.rot90(plain, degrees // 90, axes=(1, 2)))


def test_rotation_by_90_is_counter_clockwise(make_video: MakeVideo) -> None:
    """The red marker painted top-left ends up bottom-left, in a portrait frame."""
    frame = decode_video_sync(
        make_video(marker=True, rotation=90), VideoSampling(num_frames=1)
    ).frames[0]
    assert frame.shape == (64, 48, 3)
    red = (frame[..., 0] > 200) & (frame[..., 1] < 60)
    rows, cols = np.nonzero(red)
    assert rows.min() > 64 // 2 and cols.max() < 48 // 2


def test_an_undecodable_frame_fails_strict_sampling(make_video: MakeVideo) -> None:
    data = _garble_packet(make_video("mjpeg", "matroska", pix_fmt="yuvj420p"), index=10)
    with pytest.raises(MediaError, match=r"frame at 1\.000 s could not be decoded") as caught:
        decode_video_sync(data, VideoSampling(num_frames=30, strict=True))
    assert caught.value.rule == "strict"


def test_an_undecodable_frame_is_dropped_without_strict(
    make_video: MakeVideo, frame_levels: Levels
) -> None:
    data = _garble_packet(make_video("mjpeg", "matroska", pix_fmt="yuvj420p"), index=10)
    video = decode_video_sync(data, VideoSampling(num_frames=30))
    assert frame_levels(video.frames) == [i for i in range(30) if i != 10]
    assert 1.0 not in video.sampled_timestamps
    assert len(video.sampled_timestamps) == 29


def test_a_cut_short_streamable_file_samples_what_is_there(
    make_video: MakeVideo, frame_levels: Levels
) -> None:
    data = make_video("mjpeg", "matroska", pix_fmt="yuvj420p")
    video = decode_video_sync(data[: len(data) // 2], VideoSampling(num_frames=4))
    assert video.duration < 3.0
    assert frame_levels(video.frames) == [round(t * 10) for t in video.sampled_timestamps]


@pytest.mark.parametrize(
    ("describe", "rule"),
    [
        ("empty", "empty-media"),
        ("header only", "empty-media"),
        ("mp4 cut in half", "unreadable"),
        ("not a video", "unreadable"),
        ("audio only", "no-video-stream"),
    ],
)
def test_unusable_files_are_refused_clearly(
    make_video: MakeVideo, mp4_video: bytes, describe: str, rule: str
) -> None:
    data = {
        "empty": b"",
        "header only": make_video("libx264", "matroska", frames=0),
        "mp4 cut in half": mp4_video[: len(mp4_video) // 2],
        "not a video": b"this is not a video " * 50,
        "audio only": _audio_only(),
    }[describe]
    with pytest.raises(MediaError) as caught:
        decode_video_sync(data, VideoSampling(num_frames=4))
    assert caught.value.rule == rule
    assert caught.value.status == 400
    assert "; " in caught.value.message  # every message says what to do next


def _audio_only() -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("aac", rate=16000)
        for i in range(8):
            frame = av.AudioFrame.from_ndarray(
                np.zeros((1, 1024), np.float32), format="fltp", layout="mono"
            )
            frame.sample_rate, frame.pts = 16000, i * 1024
            output.mux(stream.encode(frame))
        output.mux(stream.encode())
    return buffer.getvalue()


def test_max_alloc_is_checked_before_decoding(make_video: MakeVideo) -> None:
    """Every frame is garbled, yet the refusal is about size: nothing was decoded."""
    data = make_video("mjpeg", "matroska", pix_fmt="yuvj420p", frames=4)
    for index in range(4):
        data = _garble_packet(data, index)
    with pytest.raises(MediaError) as caught:
        decode_video_sync(data, VideoSampling(num_frames=4, strict=True, max_alloc=30_000))
    assert caught.value.rule == "max-alloc"
    assert "4 frames x 64x48 x 3" in caught.value.message
    assert "lower num_frames or fps" in caught.value.message


def test_max_duration_is_enforced(mp4_video: bytes) -> None:
    with pytest.raises(MediaError, match="lasts 3.0 s") as caught:
        decode_video_sync(mp4_video, VideoSampling(num_frames=4, max_duration_s=2.5))
    assert caught.value.rule == "max-duration-s"


def test_fps_that_would_exceed_the_frame_limit_is_refused(mp4_video: bytes) -> None:
    with pytest.raises(MediaError, match="lower fps or set max_frames") as caught:
        decode_video_sync(mp4_video, VideoSampling(fps=10, max_sampled_frames=20))
    assert caught.value.rule == "max-sampled-frames"
    video = decode_video_sync(mp4_video, VideoSampling(fps=10, max_frames=20))
    assert len(video.frames) == 20


async def test_decode_video_runs_off_the_event_loop_thread(
    monkeypatch: pytest.MonkeyPatch, mp4_video: bytes, frame_levels: Levels
) -> None:
    threads: list[threading.Thread] = []

    def spy(data: bytes, sampling: VideoSampling) -> DecodedVideo:
        threads.append(threading.current_thread())
        return decode_video_sync(data, sampling)

    monkeypatch.setattr(media.video, "decode_video_sync", spy)
    video = await decode_video(mp4_video, VideoSampling(num_frames=2))
    assert frame_levels(video.frames) == [0, 15]
    assert threads and threads[0] is not threading.current_thread()
