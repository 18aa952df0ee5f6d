"""The disaggregated graph: prefill workers, KV cache and embeddings over NIXL, 2 encode workers."""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
from graph_helpers import (
    LONG_TEXT,
    MAX_TOKENS,
    Reference,
    answer_token_ids,
    ask,
    media_message,
    metric,
    start_graph,
    token_ids,
    user_message,
    worker_stat,
    worker_stats,
)
from otlp_receiver import OtlpReceiver, ReceivedSpan, otlp_receiver

from graphs.serve import ROOT, RunningGraph
from runtime.discovery import Discovery
from runtime.processes import alive
from runtime.secret import SECRET_FILE_ENV

CONFIG = ROOT / "configs" / "disagg.yaml"
STAGES = ["queued", "fetching", "decoding", "encoding", "generating"]


@pytest.fixture(scope="module")
def collector() -> Iterator[OtlpReceiver]:
    with otlp_receiver() as receiver:
        yield receiver


@pytest.fixture(scope="module")
def graph(
    model_dir: Path, media_dir: Path, tmp_path_factory, collector: OtlpReceiver
) -> Iterator[RunningGraph]:
    """The graph, every process of it exporting its spans to `collector` (OTel's own env),
    and every link authenticated by a secret (as a Kubernetes Secret would be mounted)."""
    secret_file = tmp_path_factory.mktemp("secret") / "graph-secret"
    secret_file.write_text(secrets.token_urlsafe(32))
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SECRET_FILE_ENV, str(secret_file))
        env.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", collector.endpoint)
        env.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # ms between exports (default 5 s)
        yield from start_graph("disagg", media_dir, tmp_path_factory)


def test_the_graph_admits_only_holders_of_its_secret(graph: RunningGraph) -> None:
    """Every other test here passes through its authenticated links; its etcd refuses the rest."""
    etcd_address = re.search(r"started etcd on (\S+)", graph.log_path.read_text())
    assert etcd_address is not None, "the graph did not start its own etcd"
    with pytest.raises(ConnectionError, match=SECRET_FILE_ENV):
        asyncio.run(Discovery.connect(etcd_address[1], "default"))  # no secret given


def test_one_request_is_one_trace_across_every_process(
    graph: RunningGraph, collector: OtlpReceiver, video: Callable[[int], Path]
) -> None:
    """The caller's `traceparent` in, every stage of every process's work in its trace, one tree.

    A video seen by no other test (the embedding cache would skip fetch, decode and
    encode) and a prompt too long to prefill locally, so every stage runs.
    """
    trace_id, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    answer = httpx.post(
        f"{graph.base_url}/v1/chat/completions",
        json={
            "model": "tiny",
            "messages": user_message(LONG_TEXT, [f"file://{video(31)}"]),
            "max_tokens": 4,
        },
        headers={"traceparent": f"00-{trace_id}-{caller_span}-01"},
        timeout=120,
    )
    assert answer.status_code == 200, answer.text
    stages = {"fetch", "decode", "encode", "embedding_transfer", "prefill", "kv_transfer"}
    services = {f"vidgraph.{c}" for c in ("Frontend", "Processor", "DecodeWorker")}
    services |= {"vidgraph.PrefillWorker", "vidgraph.EncodeWorker"}

    def whole(spans: list[ReceivedSpan]) -> bool:
        ids = {s.span_id for s in spans} | {caller_span}
        return (
            stages <= {s.name for s in spans}
            and services <= {s.service for s in spans}
            and all(s.parent_span_id in ids for s in spans)  # no span whose parent is missing
        )

    deadline = time.monotonic() + 30.0  # exports leave every 100 ms; a loaded host is slower
    while not whole(spans := collector.spans(trace_id)):
        assert time.monotonic() < deadline, f"an incomplete trace: {spans}"
        time.sleep(0.1)
    [root] = [s for s in spans if s.parent_span_id == caller_span]
    assert (root.service, root.name) == ("vidgraph.Frontend", "POST /v1/chat/completions")
    assert len({s.pid for s in spans}) >= len(services)  # one trace over five processes


def instances(graph: RunningGraph, component: str) -> list[dict]:
    return httpx.get(f"{graph.base_url}/health").json()["instances"][component]


CASES = {  # text, seeds of videos, seeds of images (LLaVA-NeXT-Video's anyres image path)
    "long text only": (LONG_TEXT, [], []),
    "one video": ("What?", [5], []),
    "two videos": ("Both?", [6, 7], []),
    "one image": ("What?", [], [4]),
    "two images": ("Both?", [], [5, 6]),
}


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("case", CASES)
def test_remote_prefill_gives_transformers_greedy_tokens(
    case: str,
    stream: bool,
    client: openai.OpenAI,
    graph: RunningGraph,
    reference: Reference,
    video: Callable[[int], Path],
    image: Callable[[int], Path],
) -> None:
    text, video_seeds, image_seeds = CASES[case]
    videos, pictures = [video(s) for s in video_seeds], [image(s) for s in image_seeds]
    remote_before = worker_stat(graph, "DecodeWorker", "remote_prefills")

    answer = ask(client, media_message(text, videos, pictures), stream=stream)

    got = answer_token_ids(answer)
    assert got == reference.greedy(text, videos, MAX_TOKENS, tuple(pictures))
    assert worker_stat(graph, "DecodeWorker", "remote_prefills") == remote_before + 1


def test_a_streamed_inference_prefilled_remotely_reports_every_stage_in_order(
    graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    """The encode worker's stages reach the frontend through the prefill worker's stream."""
    remote_before = worker_stat(graph, "DecodeWorker", "remote_prefills")
    body = {
        "video_url": f"file://{video(400)}",  # not seen before: every stage runs
        "prompt": "Describe it.",
        "generation_params": {"max_tokens": MAX_TOKENS, "temperature": 0},
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{graph.base_url}/v1/inference/url", json=body, timeout=120
    ) as response:
        assert response.status_code == 200, response.read()
        received, name = [], "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: "):
                received.append((name, json.loads(line.removeprefix("data: "))))

    assert worker_stat(graph, "DecodeWorker", "remote_prefills") == remote_before + 1
    names = [name for name, _ in received]
    assert [data["stage"] for name, data in received if name == "status"] == STAGES
    assert names == ["status"] * 5 + ["delta"] * (len(names) - 6) + ["done"]
    done = received[-1][1]
    assert "".join(data["text"] for name, data in received if name == "delta") == done["text"]
    # The video's facts came up with the encode worker's `encoding` report.
    assert done["video"]["width"] == 80 and done["video"]["frames_sampled"] > 0


def test_kv_and_embeddings_crossed_processes_over_nixl(
    client: openai.OpenAI, graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    wait_for_encode_workers(graph)  # a worker killed by an earlier test is replaced
    served_before = worker_stats(graph, "EncodeWorker", "transport_bytes_served")
    read_before = worker_stats(graph, "PrefillWorker", "embedding_bytes_read")
    ask(client, user_message("Counted?", [f"file://{video(8)}"]))
    assert worker_stat(graph, "PrefillWorker", "kv_bytes_exposed") > 0
    assert worker_stat(graph, "DecodeWorker", "kv_bytes_read") > 0
    read = _grown(read_before, worker_stats(graph, "PrefillWorker", "embedding_bytes_read"))
    assert read > 0
    # Cache-aware routing may never send a video to one of the encode workers, which then has
    # not chosen a backend yet: every worker that chose one chose NIXL, and some did.
    for component in ("DecodeWorker", "PrefillWorker", "EncodeWorker"):
        nixl = worker_stats(graph, component, "transport_nixl")
        tcp = worker_stats(graph, component, "transport_tcp")
        assert any(v == 1 for v in nixl.values()), (component, nixl)
        assert not any(tcp.values()), (component, tcp)
    # The encode worker counts bytes as served when the reader's completion notice reaches it,
    # which can land a moment after the answer: wait for it rather than read it once. Counts
    # are this request's (by instance): a worker killed by another test took its own along.
    deadline = time.monotonic() + 60
    while (
        _grown(served_before, worker_stats(graph, "EncodeWorker", "transport_bytes_served")) < read
    ):
        assert time.monotonic() < deadline, "the encode worker never counted the bytes it served"
        time.sleep(0.2)


def _grown(before: dict, now: dict) -> float:
    """How much per-instance counters grew; an instance new since `before` counts from 0."""
    return sum(value - before.get(instance, 0.0) for instance, value in now.items())


def test_conditional_disagg_keeps_short_text_local(
    client: openai.OpenAI, graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    local = worker_stat(graph, "DecodeWorker", "local_prefills")
    remote = worker_stat(graph, "DecodeWorker", "remote_prefills")

    ask(client, user_message("Hi!", []))
    assert worker_stat(graph, "DecodeWorker", "local_prefills") == local + 1
    assert worker_stat(graph, "DecodeWorker", "remote_prefills") == remote

    ask(client, user_message("Hi!", [f"file://{video(9)}"]))
    assert worker_stat(graph, "DecodeWorker", "remote_prefills") == remote + 1


def wait_for_encode_workers(graph: RunningGraph, count: int = 2) -> list[dict]:
    """The graph's `count` encode workers, all alive (a killed one is replaced, then deregistered).

    Tests here run in random order, after any test that killed or added a worker.
    """
    deadline = time.monotonic() + 150
    while True:
        found = instances(graph, "EncodeWorker")
        if len(found) == count and all(alive(i["pid"]) for i in found):
            return found
        assert time.monotonic() < deadline, f"encode workers: {found}"
        time.sleep(0.5)


def _concurrently(graph: RunningGraph, urls: list[str]) -> list[list[int] | Exception]:
    client = openai.AsyncOpenAI(base_url=f"{graph.base_url}/v1", api_key="unused", max_retries=0)

    async def one(url: str) -> list[int] | Exception:
        try:
            answer = await client.chat.completions.create(
                model="tiny",
                messages=user_message("What happens?", [url]),
                max_tokens=MAX_TOKENS,
                temperature=0,
                logprobs=True,
                extra_body={"return_tokens_as_token_ids": True},
            )
        except openai.APIError as error:
            return error
        return token_ids(answer.choices[0].logprobs.content)

    async def run() -> list[list[int] | Exception]:
        return await asyncio.gather(*(one(u) for u in urls))

    return asyncio.run(run())


def test_sixteen_concurrent_videos_use_both_encode_workers(
    graph: RunningGraph, reference: Reference, video: Callable[[int], Path]
) -> None:
    expected = reference.greedy_clear_of_ties("What happens?", video, range(100, 130), 16)
    wait_for_encode_workers(graph)
    before = worker_stats(graph, "EncodeWorker", "media_encoded")
    assert len(before) == 2

    answers = _concurrently(graph, [f"file://{video(s)}" for s in expected])

    assert answers == list(expected.values())
    after = worker_stats(graph, "EncodeWorker", "media_encoded")
    assert all(after[i] > before[i] for i in before), (before, after)


def test_an_encode_worker_killed_mid_traffic_loses_nothing_silently(
    graph: RunningGraph, reference: Reference, video: Callable[[int], Path]
) -> None:
    victim = wait_for_encode_workers(graph)[0]
    expected = reference.greedy_clear_of_ties("What happens?", video, range(200, 220), 12)
    urls = [f"file://{video(s)}" for s in expected]

    async def kill_while_serving(traffic: asyncio.Task) -> None:
        # While it serves a request (not after a fixed delay, which load can stretch past
        # the whole burst): that is the case the test is about.
        while not traffic.done():
            stats = await asyncio.to_thread(worker_stats, graph, "EncodeWorker", "inflight")
            if stats.get(victim["id"], 0) >= 1:
                break
            await asyncio.sleep(0.01)
        os.kill(victim["pid"], signal.SIGKILL)

    def traffic_with_a_kill() -> list[list[int] | Exception]:
        async def both() -> list[list[int] | Exception]:
            traffic = asyncio.create_task(asyncio.to_thread(_concurrently, graph, urls))
            await kill_while_serving(traffic)
            return await traffic

        return asyncio.run(both())

    answers = traffic_with_a_kill()

    for want, answer in zip(expected.values(), answers, strict=True):
        if isinstance(answer, Exception):  # failed cleanly: an OpenAI error with a status
            assert isinstance(answer, openai.APIStatusError) and answer.status_code >= 500
        else:
            assert answer == want
    later = _concurrently(graph, [f"file://{video(s)}" for s in (220, 221, 222)])
    assert all(not isinstance(a, Exception) for a in later), later


def test_an_encode_worker_added_while_serving_is_used(
    graph: RunningGraph, media_dir: Path, video: Callable[[int], Path]
) -> None:
    wait_for_encode_workers(graph)
    extra = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "runtime.worker",
            "graphs.disagg",
            "EncodeWorker",
            "--etcd",
            graph.etcd_address,
            "-f",
            str(CONFIG),
            f"--EncodeWorker.allowed-local-media-path={media_dir}",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def added() -> set[str]:
            """Its instance ids (a lease lapse under load would re-register it as a new one)."""
            return {i["id"] for i in instances(graph, "EncodeWorker") if i["pid"] == extra.pid}

        deadline = time.monotonic() + 120
        while not added():
            assert time.monotonic() < deadline, "the added encode worker never registered"
            assert extra.poll() is None, "the added encode worker exited"
            time.sleep(0.5)

        # Sixteen new videos: cache-aware routing gives it about a third of them.
        _concurrently(graph, [f"file://{video(s)}" for s in range(300, 316)])

        encoded = worker_stats(graph, "EncodeWorker", "media_encoded")
        assert sum(encoded.get(i, 0) for i in added()) > 0
    finally:
        extra.terminate()
        extra.wait(60)


def test_a_grammar_holds_across_the_prefill_to_decode_handoff(
    client: openai.OpenAI, graph: RunningGraph
) -> None:
    """The prefill worker samples the first token under the grammar; the decode worker's
    matcher catches up from it and keeps the rest inside the grammar too."""
    before = worker_stat(graph, "DecodeWorker", "remote_prefills")
    answer = client.chat.completions.create(
        model="tiny",
        messages=user_message(LONG_TEXT, []),
        max_tokens=12,
        temperature=0,
        extra_body={"structured_outputs": {"regex": "(yes|no)( maybe)+"}},
    )
    text = answer.choices[0].message.content
    assert worker_stat(graph, "DecodeWorker", "remote_prefills") == before + 1
    assert text.startswith(("yes maybe", "no maybe")), text
    assert set(text.removeprefix("yes").removeprefix("no").split()) == {"maybe"}, text
    for component, stage in [("PrefillWorker", "prefill"), ("DecodeWorker", "kv_transfer")]:
        labels = f'component="{component}",model_name="tiny",stage="{stage}"'
        assert metric(graph, f"vidgraph:stage_duration_seconds_count{{{labels}}}") >= 1, stage
