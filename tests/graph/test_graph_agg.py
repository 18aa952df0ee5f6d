"""The aggregated graph end to end: real processes, etcd, NIXL, HTTP and the `openai` client."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from graph_helpers import (
    MAX_TOKENS,
    RUNNING,
    Reference,
    ask,
    data_url,
    media_message,
    metric,
    start_graph,
    token_ids,
    user_message,
    worker_stat,
)
from openai_fields import COMPANIONS, HI, HONOURED, REFUSED, openai_chat_fields

from graphs.serve import ROOT, RunningGraph, free_port


@pytest.fixture(scope="module")
def graph(model_dir: Path, media_dir: Path, tmp_path_factory) -> Iterator[RunningGraph]:
    yield from start_graph("agg", media_dir, tmp_path_factory)


CASES = {  # seeds of (videos, images); images take LLaVA-NeXT-Video's anyres image path
    "text only": ([], []),
    "one video": ([1], []),
    "two videos": ([2, 3], []),
    "one image": ([], [1]),
    "two images": ([], [1, 2]),
}


@pytest.mark.parametrize("case", CASES)
def test_greedy_tokens_equal_transformers_generate(
    case: str,
    client: openai.OpenAI,
    reference: Reference,
    video: Callable[[int], Path],
    image: Callable[[int], Path],
) -> None:
    videos = [video(seed) for seed in CASES[case][0]]
    pictures = [image(seed) for seed in CASES[case][1]]
    text = "Describe what you see."
    expected = reference.greedy(text, videos, MAX_TOKENS, tuple(pictures))

    answer = ask(client, media_message(text, videos, pictures))

    assert token_ids(answer.choices[0].logprobs.content) == expected
    assert answer.usage.completion_tokens == len(expected)
    assert answer.choices[0].finish_reason in ("stop", "length")


def test_streaming_gives_the_same_tokens_and_text(
    client: openai.OpenAI, reference: Reference, video: Callable[[int], Path]
) -> None:
    clip = video(4)
    messages = user_message("What happens?", [data_url(clip)])
    whole = ask(client, messages)

    chunks = list(ask(client, messages, stream=True, stream_options={"include_usage": True}))

    streamed_ids = [
        i
        for c in chunks
        if c.choices and c.choices[0].logprobs
        for i in token_ids(c.choices[0].logprobs.content)
    ]
    assert streamed_ids == reference.greedy("What happens?", [clip], MAX_TOKENS)
    assert streamed_ids == token_ids(whole.choices[0].logprobs.content)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens
    assert whole.usage.prompt_tokens > 8 * 16  # the 8 frames' video tokens are counted


def test_sixteen_concurrent_videos_each_get_their_own_answer(
    graph: RunningGraph, reference: Reference, video: Callable[[int], Path]
) -> None:
    expected = reference.greedy_clear_of_ties("What happens?", video, range(10, 40), 16)
    seeds = list(expected)
    client = openai.AsyncOpenAI(base_url=f"{graph.base_url}/v1", api_key="unused", max_retries=0)

    async def one(seed: int) -> list[int]:
        answer = await client.chat.completions.create(
            model="tiny",
            messages=user_message("What happens?", [f"file://{video(seed)}"]),
            max_tokens=MAX_TOKENS,
            temperature=0,
            logprobs=True,
            extra_body={"return_tokens_as_token_ids": True},
        )
        return token_ids(answer.choices[0].logprobs.content)

    async def all_of_them() -> list[list[int]]:
        return await asyncio.gather(*(one(s) for s in seeds))

    answers = asyncio.run(all_of_them())

    assert dict(zip(seeds, answers, strict=True)) == expected
    assert len({tuple(a) for a in answers}) > 1  # different videos, different answers


def test_a_repeated_video_hits_the_embedding_cache(
    client: openai.OpenAI, graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    url = f"file://{video(40)}"
    hits = worker_stat(graph, "EncodeWorker", "embedding_cache_hits")
    first = ask(client, user_message("Once.", [url]))
    assert worker_stat(graph, "EncodeWorker", "embedding_cache_hits") == hits
    second = ask(client, user_message("Once.", [url]))
    assert worker_stat(graph, "EncodeWorker", "embedding_cache_hits") == hits + 1
    assert second.choices[0].message.content == first.choices[0].message.content


def test_a_second_question_on_the_same_video_reuses_its_prefilled_kv_blocks(
    client: openai.OpenAI, graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    url = f"file://{video(41)}"
    first = ask(client, user_message("What happens first?", [url]))
    hits = worker_stat(graph, "DecodeWorker", "prefix_cache_hit_tokens")

    ask(client, user_message("And what happens then?", [url]))

    # The prompt up to the end of the video is the same: its full blocks are not computed.
    reused = worker_stat(graph, "DecodeWorker", "prefix_cache_hit_tokens") - hits
    assert reused >= first.usage.prompt_tokens // 2


def post(graph: RunningGraph, body: object, raw: bytes | None = None) -> httpx.Response:
    url = f"{graph.base_url}/v1/chat/completions"
    if raw is not None:
        return httpx.post(url, content=raw, headers={"content-type": "application/json"})
    return httpx.post(url, json=body, timeout=60)


def chat(messages: list[dict], **fields: object) -> dict:
    return {"model": "tiny", "messages": messages, "max_tokens": 4, **fields}


def assert_settles_idle(graph: RunningGraph, timeout_s: float) -> None:
    """Within `timeout_s`, the frontend counts no running request and the decode worker
    holds no sequence (a cancelled request frees both)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        running = worker_stat(graph, "DecodeWorker", "running_sequences")
        if metric(graph, RUNNING) == 0 and running == 0:
            break
        time.sleep(0.2)
    assert metric(graph, RUNNING) == 0
    assert worker_stat(graph, "DecodeWorker", "running_sequences") == 0


ERRORS = {
    "malformed json": (None, b'{"model": "tiny", "messages": [', 400),
    "no messages": ({"model": "tiny"}, None, 400),
    "n above 16": (chat(user_message("hi", []), n=17), None, 400),
    "tools without a tool template": (
        chat(user_message("hi", []), tools=[{"type": "function"}]),
        None,
        400,
    ),
    "a field neither OpenAI nor vLLM defines": (
        chat(user_message("hi", []), colour="red"),
        None,
        400,
    ),
    "a special token typed as text": (chat(user_message("what is <video>?", [])), None, 400),
    "a grammar that does not compile": (chat(user_message("hi", []), guided_regex="(("), None, 400),
    "logit_bias beyond the vocabulary": (
        chat(user_message("hi", []), logit_bias={"99999": 1}),
        None,
        400,
    ),
    "unknown model": ({**chat(user_message("hi", [])), "model": "gpt-9"}, None, 404),
    "too many videos": (
        chat(user_message("hi", [f"file:///v{i}.mp4" for i in range(5)])),
        None,
        400,
    ),
    "prompt over max-model-len": (chat(user_message("word " * 5000, [])), None, 400),
    "max_tokens over room": (chat(user_message("hi", []), max_tokens=10_000), None, 400),
    "loopback url (SSRF)": (chat(user_message("hi", ["http://127.0.0.1:9/x.mp4"])), None, 400),
    "metadata url (SSRF)": (
        chat(user_message("hi", ["http://169.254.169.254/latest/meta-data"])),
        None,
        400,
    ),
    "file outside the allowed path": (chat(user_message("hi", ["file:///etc/passwd"])), None, 400),
    "not a video": (chat(user_message("hi", ["data:video/mp4;base64,AAAA"])), None, 400),
    "unknown scheme": (chat(user_message("hi", ["gopher://example.com/v.mp4"])), None, 400),
}


@pytest.mark.parametrize("case", ERRORS)
def test_bad_requests_get_an_openai_error_and_the_graph_keeps_serving(
    case: str, graph: RunningGraph, client: openai.OpenAI
) -> None:
    body, raw, status = ERRORS[case]

    response = post(graph, body, raw)

    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert response.headers["x-request-id"]
    assert ask(client, user_message("Still there?", [])).choices[0].message.content is not None


def test_a_client_that_disconnects_mid_stream_frees_its_sequence(graph: RunningGraph) -> None:
    body = chat(
        user_message("Talk for a long time.", []), max_tokens=3000, ignore_eos=True, stream=True
    )
    with httpx.stream("POST", f"{graph.base_url}/v1/chat/completions", json=body) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        assert metric(graph, RUNNING) == 1
    assert_settles_idle(graph, timeout_s=60)


def test_health_lists_every_component_and_models_lists_tiny(graph: RunningGraph) -> None:
    health = httpx.get(f"{graph.base_url}/health").json()
    assert health["status"] == "ready"
    assert set(health["instances"]) == {"Frontend", "Processor", "DecodeWorker", "EncodeWorker"}
    assert all(health["instances"].values())
    models = httpx.get(f"{graph.base_url}/v1/models").json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    assert httpx.get(f"{graph.base_url}/live").status_code == 200
    assert "/v1/chat/completions" in httpx.get(f"{graph.base_url}/openapi.json").json()["paths"]


def test_a_frontend_with_no_live_workers_answers_503(graph: RunningGraph) -> None:
    """A frontend alone in its namespace: every request is a clear 503, /health says why."""
    port = free_port()
    lonely = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.worker",
            "graphs.agg",
            "Frontend",
            "--etcd",
            graph.etcd_address,
            "--namespace",
            "lonely",
            "-f",
            str(ROOT / "configs" / "agg.yaml"),
            f"--Frontend.port={port}",
            "--Frontend.host=127.0.0.1",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{base}/health")
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and lonely.poll() is None
                time.sleep(0.3)
        assert health.status_code == 503
        assert health.json()["instances"]["Processor"] == []

        response = httpx.post(
            f"{base}/v1/chat/completions", json=chat(user_message("hi", [])), timeout=60
        )

        assert response.status_code == 503, response.text
        assert response.json()["error"]["type"] == "service_unavailable"
        assert response.headers["retry-after"]
    finally:
        lonely.terminate()
        lonely.wait(30)


def test_every_openai_and_vllm_chat_field_is_honoured_or_refused(graph: RunningGraph) -> None:
    assert openai_chat_fields() <= set(HONOURED) | set(REFUSED), "a new OpenAI field"
    for field, (value, check) in HONOURED.items():
        body = {**chat(HI), "temperature": 0, field: value, **COMPANIONS.get(field, {})}
        response = post(graph, body)
        assert response.status_code == 200, (field, response.text)
        if body.get("stream"):
            assert response.text.rstrip().endswith("data: [DONE]"), field
        elif check is not None:
            assert check(response.json()), (field, response.json())
    for field, value in REFUSED.items():
        response = post(graph, {**chat(HI), field: value})
        assert response.status_code == 400, (field, response.text)
        assert response.json()["error"]["param"] == field, field


def test_n_choices_share_the_request_and_greedy_ones_equal_transformers(
    client: openai.OpenAI, reference: Reference
) -> None:
    answer = ask(client, user_message("Count.", []), n=3)
    expected = reference.greedy("Count.", [], MAX_TOKENS)
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert all(token_ids(c.logprobs.content) == expected for c in answer.choices)
    assert answer.usage.completion_tokens == 3 * len(expected)

    seeded = client.chat.completions.create(
        model="tiny", messages=HI, n=2, seed=11, temperature=1.0, max_tokens=MAX_TOKENS
    )
    again = client.chat.completions.create(
        model="tiny", messages=HI, n=2, seed=11, temperature=1.0, max_tokens=MAX_TOKENS
    )
    assert [c.message.content for c in seeded.choices] == [c.message.content for c in again.choices]


def test_text_completions_of_text_and_token_ids_equal_transformers(
    client: openai.OpenAI, reference: Reference
) -> None:
    prompt = "Once upon a time"
    expected = reference.greedy_text(prompt, MAX_TOKENS)
    as_text = client.completions.create(
        model="tiny",
        prompt=prompt,
        max_tokens=MAX_TOKENS,
        temperature=0,
        logprobs=2,
        extra_body={"return_tokens_as_token_ids": True},
    )
    [choice] = as_text.choices
    assert [int(t.removeprefix("token_id:")) for t in choice.logprobs.tokens] == expected
    assert all(len(top) == 2 for top in choice.logprobs.top_logprobs)
    ids = reference.processor.tokenizer(prompt)["input_ids"]
    as_ids = client.completions.create(
        model="tiny", prompt=ids, max_tokens=MAX_TOKENS, temperature=0
    )
    assert as_ids.choices[0].text == choice.text
    two = client.completions.create(
        model="tiny", prompt=[prompt, "Other"], n=2, max_tokens=2, temperature=0
    )
    assert [c.index for c in two.choices] == [0, 1, 2, 3]
    assert two.choices[0].text == two.choices[1].text == choice.text[: len(two.choices[0].text)]


def test_a_completion_stream_with_continuous_usage_counts_every_chunk(
    client: openai.OpenAI,
) -> None:
    stream = client.completions.create(
        model="tiny",
        prompt="Hello",
        max_tokens=5,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True, "continuous_usage_stats": True},  # type: ignore[typeddict-unknown-key]
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    counted = [c.usage.completion_tokens for c in chunks if c.choices]
    assert counted == sorted(counted) and counted[-1] == 5
    assert chunks[-1].choices == []
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 5


def test_a_client_that_disconnects_before_a_whole_answer_cancels_it(graph: RunningGraph) -> None:
    """Not streamed: the frontend notices the closed connection and cancels through the graph."""
    body = json.dumps(
        chat(user_message("Talk for a long time.", []), max_tokens=3000, ignore_eos=True)
    ).encode()
    host, port = graph.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as raw:
        raw.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        deadline = time.monotonic() + 60
        while worker_stat(graph, "DecodeWorker", "running_sequences") != 1:
            assert time.monotonic() < deadline, "the request never started decoding"
            time.sleep(0.1)
    assert_settles_idle(graph, timeout_s=30)


def test_models_lists_the_context_length_and_modalities(graph: RunningGraph) -> None:
    [card] = httpx.get(f"{graph.base_url}/v1/models").json()["data"]
    assert card["max_model_len"] == 4096
    assert card["modalities"] == ["text", "image", "video"]


def test_metrics_use_vllm_names_with_the_model_and_time_every_stage(
    graph: RunningGraph, client: openai.OpenAI, video: Callable[[int], Path]
) -> None:
    ask(client, user_message("Describe.", [data_url(video(7))]))
    assert post(graph, {**chat(HI), "model": "gpt-9"}).status_code == 404
    model = 'model_name="tiny"'
    assert metric(graph, f"vidgraph:time_to_first_token_seconds_count{{{model}}}") >= 1
    assert metric(graph, f"vidgraph:e2e_request_latency_seconds_count{{{model}}}") >= 1
    assert metric(graph, f"vidgraph:generation_tokens_total{{{model}}}") >= 1
    not_found = f'vidgraph:request_errors_total{{{model},reason="model_not_found",status="404"}}'
    assert metric(graph, not_found) >= 1
    assert 0 <= metric(graph, f"vidgraph:kv_cache_usage_perc{{{model}}}") <= 1
    assert metric(graph, f"vidgraph:prefix_cache_queries_total{{{model}}}") >= 1
    for component, stage in [
        ("EncodeWorker", "fetch"),
        ("EncodeWorker", "decode"),
        ("EncodeWorker", "encode"),
        ("DecodeWorker", "embedding_transfer"),
    ]:
        labels = f'component="{component}",{model},stage="{stage}"'
        assert metric(graph, f"vidgraph:stage_duration_seconds_count{{{labels}}}") >= 1, stage
