"""The request mix is reproducible by seed and keeps its promises about repeated bytes."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from benchmarks.loadgen.workload import CROSSCHECK, WARMUP, Workload, WorkloadSpec

MIX = WorkloadSpec(
    video_share=0.5,
    repeat_share=0.3,
    text_share=0.2,
    video_seconds=(0.5, 1.0),
    repeat_pool=2,
    max_tokens=8,
    seed=7,
)


def test_same_seed_same_requests_and_bytes() -> None:
    first = Workload(MIX).prepare(range(12), "tiny")
    second = Workload(MIX).prepare(range(12), "tiny")
    assert first == second
    other_seed = WorkloadSpec(**{**MIX.to_json(), "seed": 8})
    assert Workload(other_seed).prepare(range(12), "tiny") != first


def test_shares_are_followed_and_fresh_videos_never_repeat() -> None:
    workload = Workload(MIX)
    requests = [workload.request(i) for i in range(2000)]
    counts = Counter(r.kind for r in requests)
    assert counts["video"] / 2000 == pytest.approx(0.5, abs=0.05)
    assert counts["repeat"] / 2000 == pytest.approx(0.3, abs=0.05)
    assert counts["text"] / 2000 == pytest.approx(0.2, abs=0.05)
    fresh = [r.video_seed for r in requests if r.kind == "video"]
    assert len(set(fresh)) == len(fresh)
    assert {r.video_seed for r in requests if r.kind == "repeat"} == {0, 1}
    assert not set(fresh) & {0, 1}


def test_other_streams_follow_the_mix_with_videos_of_their_own() -> None:
    workload = Workload(MIX)
    measured = [workload.request(i) for i in range(200)]
    for stream in (WARMUP, CROSSCHECK):
        other = [workload.request(i, stream) for i in range(200)]
        assert [(r.kind, r.prompt, r.video_seconds) for r in other] == [
            (r.kind, r.prompt, r.video_seconds) for r in measured
        ]
        pairs = [(a.video_seed, b.video_seed) for a, b in zip(measured, other, strict=True)]
        assert all(a != b for (a, b), r in zip(pairs, measured, strict=True) if r.kind == "video")
        assert all(a == b for (a, b), r in zip(pairs, measured, strict=True) if r.kind == "repeat")


def test_repeats_resend_the_same_video_bytes() -> None:
    workload = Workload(MIX)
    repeats = [r for r in (workload.request(i) for i in range(40)) if r.kind == "repeat"]
    same_video = [r for r in repeats if r.video_seed == repeats[0].video_seed]
    urls = {_video_url(workload.body(r, "tiny")) for r in same_video}
    assert len(same_video) > 1 and len(urls) == 1
    assert urls.pop().startswith("data:video/mp4;base64,")


def test_body_asks_every_system_for_the_same_output_length() -> None:
    workload = Workload(MIX)
    text = next(r for r in (workload.request(i) for i in range(40)) if r.kind == "text")
    body = json.loads(json.dumps(workload.body(text, "tiny")))
    assert body["max_tokens"] == body["min_tokens"] == 8
    assert body["ignore_eos"] and body["stream"] and body["stream_options"]["include_usage"]
    assert body["messages"][0]["content"] == [{"type": "text", "text": text.prompt}]


def test_shares_must_sum_to_one() -> None:
    with pytest.raises(ValueError, match="sum to 1"):
        WorkloadSpec(video_share=0.5, repeat_share=0.3, text_share=0.3)


def _video_url(body: dict) -> str:
    (video,) = [part for part in body["messages"][0]["content"] if part["type"] == "video_url"]
    return video["video_url"]["url"]


def test_turns_of_a_conversation_share_its_video_and_grow_its_history() -> None:
    workload = Workload(WorkloadSpec(video_share=1.0, turns=4, video_seconds=(0.5,)))
    first, *later = [workload.body(workload.request(i), "tiny") for i in range(4)]
    assert [len(body["messages"]) for body in (first, *later)] == [1, 3, 5, 7]
    assert all(body["messages"][0] == first["messages"][0] for body in later)
    next_conversation = workload.body(workload.request(4), "tiny")
    assert _video_url(next_conversation) != _video_url(first)


def test_images_are_fresh_pngs_and_frames_can_be_asked_for() -> None:
    spec = WorkloadSpec(video_share=0.0, image_share=1.0, num_frames=32)
    workload = Workload(spec)
    bodies = [workload.body(workload.request(i), "tiny") for i in range(3)]
    urls = [part["image_url"]["url"] for b in bodies for part in b["messages"][0]["content"][1:]]
    assert len(set(urls)) == 3 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert bodies[0]["media_io_kwargs"] == {"video": {"num_frames": 32}}
