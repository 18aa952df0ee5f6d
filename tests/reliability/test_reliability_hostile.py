"""Hostile input through the whole graph: every case is a 4xx (or a plain answer), no worker dies.

The media cases are the fixed ones of `benchmarks.fuzz_media` (corrupt,
truncated, wrong container, decompression bombs) plus a few seconds of its
random mutations; the long fuzz is `python -m benchmarks.fuzz_media`.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from reliability_helpers import pids

from benchmarks.fuzz_media import fuzz
from graphs.serve import RunningGraph

SHORT_FUZZ_S = 10.0


def user(content: object, **extra: object) -> bytes:
    body = {"model": "tiny", "messages": [{"role": "user", "content": content}], "max_tokens": 2}
    return json.dumps({**body, **extra}).encode()


def video_parts(count: int) -> list[dict]:
    part = {"type": "video_url", "video_url": {"url": "https://example.com/v.mp4"}}
    return [{"type": "text", "text": "What?"}, *[part] * count]


REFUSED = {
    "invalid UTF-8": b'{"model": "tiny", "messages": [{"role": "user", "content": "\xff\xfe"}]}',
    "arrays nested 100000 deep": b"[" * 100_000 + b"]" * 100_000,
    "objects nested 20000 deep": b'{"a": ' * 20_000 + b"1" + b"}" * 20_000,
    "not an object": b'"just a string"',
    "empty body": b"",
    "NaN temperature": user("hi", temperature=float("nan")),
    "1000 video parts": user(video_parts(1000)),
    "max_tokens of 10**30": user("hi", max_tokens=10**30),
    "seed of 2**80": user("hi", seed=2**80),
    "unknown part type": user([{"type": "audio_url", "audio_url": {"url": "x"}}]),
    "lone surrogate in the text": user("\ud800 hi"),
}
ANSWERED = {
    "1000 text parts": user([{"type": "text", "text": "a"}] * 1000),
    "1000 messages": json.dumps(
        {"model": "tiny", "max_tokens": 2, "messages": [{"role": "user", "content": "a"}] * 1000}
    ).encode(),
    "negative seed": user("hi", seed=-1),
    "NUL bytes in the text": user("a\u0000b"),
}


@pytest.fixture(scope="module")
def client(graph: RunningGraph) -> httpx.Client:
    with httpx.Client(base_url=graph.base_url, timeout=120) as client:
        yield client


@pytest.mark.parametrize("case", REFUSED)
def test_hostile_json_is_a_4xx(case: str, client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=REFUSED[case],
        headers={"Content-Type": "application/json"},
    )
    assert 400 <= response.status_code < 500, response.text
    assert response.json()["error"]["message"]


@pytest.mark.parametrize("case", ANSWERED)
def test_odd_but_valid_json_is_answered(case: str, client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=ANSWERED[case],
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_hostile_media_is_a_4xx_and_no_worker_dies(
    client: httpx.Client, graph: RunningGraph, media_dir: Path
) -> None:
    before = pids(graph.base_url)
    result = fuzz(client, SHORT_FUZZ_S, seed=1, say=print)
    assert result["server_errors"] == 0, result["statuses"]
    for name, statuses in result["statuses"].items():
        if not name.startswith("mutation"):  # a mutation may still be a playable video
            assert all(400 <= status < 500 for status in statuses), (name, statuses)
    assert pids(graph.base_url) == before, "a worker died (and was restarted) during the fuzz"
