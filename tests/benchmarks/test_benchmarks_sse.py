"""SSE bookkeeping: which chunks count as tokens, usage, the end and errors."""

from __future__ import annotations

import json

import pytest

from benchmarks.loadgen.client import apply_sse_line
from benchmarks.loadgen.record import RequestRecord


def data(chunk: dict) -> str:
    return "data: " + json.dumps(chunk)


def content(text: str) -> str:
    return data({"choices": [{"index": 0, "delta": {"content": text}}]})


def test_only_chunks_with_text_are_token_arrivals() -> None:
    r = RequestRecord(kind="video", start=10.0)
    lines = [
        (10.1, data({"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]})),
        (10.2, ": keep-alive comment"),
        (10.3, content("Hel")),
        (10.3, ""),
        (10.5, content("lo")),
        (10.6, content("!")),
        (10.7, data({"choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 4}})),
    ]
    assert not any(apply_sse_line(r, line, now) for now, line in lines)
    assert apply_sse_line(r, "data: [DONE]", 10.8)
    r.finish(10.8)
    assert r.ok
    assert r.ttft_s == pytest.approx(0.3)
    assert r.itl_s == pytest.approx([0.2, 0.1])
    assert (r.output_tokens, r.input_tokens) == (4, 9)
    assert r.tpot_s == pytest.approx(0.5 / 3)
    assert r.e2e_s == pytest.approx(0.8)


def test_without_usage_each_content_chunk_counts_one_token() -> None:
    r = RequestRecord(kind="text", start=0.0)
    for i, now in enumerate((0.1, 0.2, 0.3)):
        apply_sse_line(r, content(str(i)), now)
    r.finish(0.4)
    assert r.output_tokens == 3


def test_error_event_and_garbage_fail_the_request() -> None:
    r = RequestRecord(kind="video", start=0.0)
    apply_sse_line(r, content("a"), 0.1)
    assert apply_sse_line(r, data({"error": {"message": "decode worker died"}}), 0.2)
    assert not r.ok and "decode worker died" in r.error
    garbage = RequestRecord(kind="video", start=0.0)
    assert apply_sse_line(garbage, "data: {not json", 0.1)
    assert not garbage.ok and "not JSON" in garbage.error


def test_a_stream_without_content_is_an_error() -> None:
    r = RequestRecord(kind="video", start=0.0)
    apply_sse_line(r, "data: [DONE]", 0.1)
    r.finish(0.1)
    assert not r.ok and "without any content" in r.error
