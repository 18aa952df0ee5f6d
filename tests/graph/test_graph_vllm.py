"""`engine: vllm` end to end: the disaggregated graph, vLLM under its prefill and decode workers.

One graph for the whole module (each vLLM worker is three processes that import
vLLM, a minute of CPU on a small machine): `configs/disagg-vllm.yaml` keeps short
text prompts on the decode worker's vLLM (conditional disagg) and sends video
prompts to the prefill worker's vLLM, whose KV the decode worker's vLLM pulls with
vLLM's NixlConnector. Skipped only where the vLLM venv (`make install-vllm`) is absent.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import openai
import pytest
from graph_helpers import (
    MAX_TOKENS,
    NUM_FRAMES,
    Reference,
    ask,
    ask_model,
    data_url,
    token_ids,
    user_message,
    worker_stat,
)

from benchmarks.soak import stream_with_fault
from benchmarks.systems import component_stat, descendants, process_name
from components.model_worker import VLLM_PYTHON, VLLM_PYTHON_ENV
from engine import Engine, SamplingParams
from graphs.serve import ROOT, RunningGraph, serve_graph
from runtime.processes import alive

T = TypeVar("T")

VLLM = Path(os.environ.get(VLLM_PYTHON_ENV) or VLLM_PYTHON)
# `make install-vllm` stamps the venv once it is complete; a half-made one is absent too.
INSTALLED = VLLM_PYTHON_ENV in os.environ or (VLLM_PYTHON.parent.parent / ".installed").exists()
pytestmark = pytest.mark.skipif(not INSTALLED, reason=f"no vLLM venv at {VLLM} (make install-vllm)")
RESTARTED_S = 600.0  # a replacement vLLM worker imports vLLM in three processes


@pytest.fixture(scope="module")
def graph(
    model_dir: Path, media_dir: Path, video: Callable[[int], Path], tmp_path_factory
) -> Iterator[RunningGraph]:
    with serve_graph(
        "graphs.disagg",
        ROOT / "configs" / "disagg-vllm.yaml",
        f"--EncodeWorker.allowed-local-media-path={media_dir}",
        log_path=tmp_path_factory.mktemp("disagg-vllm") / "serve.log",
        startup_timeout_s=RESTARTED_S,
    ) as running:
        warm_up(running, video(0))
        yield running


def warm_up(graph: RunningGraph, video: Path) -> None:
    """A video request through the KV handoff, then the graph whole again, before any test.

    On this 2-core machine the graph has frozen for about 20 s (every process,
    etcd's clients included: leases lapsed, workers registered again) during
    video requests: twice in a row on the first ones (the first NIXL reads of both
    vLLMs and of our agents) right after `make install-vllm`, once later in a run,
    and not at all in three other runs. The cause is not found; the tests start
    from a graph that has made its first handoff, and `through_the_kv_handoff` asks again.
    """
    body = {
        "model": "tiny",
        "messages": user_message("Warm up.", [f"file://{video}"]),
        "max_tokens": 2,
    }

    def handed_off() -> bool:
        reply = httpx.post(f"{graph.base_url}/v1/chat/completions", json=body, timeout=RESTARTED_S)
        return reply.status_code == 200 and prefill_paths(graph)["vllm_kv_handoffs"] >= 1

    wait_for("a warm-up video request through the KV handoff", handed_off)
    wait_for("the graph whole", lambda: httpx.get(f"{graph.base_url}/health").status_code == 200)


@pytest.fixture(scope="module")
def native(model_dir: Path, reference: Reference) -> Callable[[str, list[Path]], list[int]]:
    """Greedy tokens of the native engine in this process, on the frames the graph samples."""
    engine = Engine.load(model_dir, max_num_seqs=1)

    def greedy(text: str, videos: list[Path]) -> list[int]:
        content = [{"type": "text", "text": text}, *({"type": "video"} for _ in videos)]
        prompt = reference.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )
        ids = reference.processor.tokenizer(prompt)["input_ids"]
        embeddings = [engine.encode_video(reference.frames(v)) for v in videos]
        engine.add_request(
            "native", ids, embeddings, SamplingParams(temperature=0, max_tokens=MAX_TOKENS)
        )
        tokens = []
        while engine.has_unfinished():
            tokens += [step.token_id for step in engine.step()]
        return tokens

    return greedy


CASES = {"text only (decode worker's vLLM)": [], "one video": [1], "two videos": [2, 3]}


@pytest.mark.parametrize("case", CASES)
def test_greedy_tokens_equal_the_native_engine_and_transformers_generate(
    case: str,
    client: openai.OpenAI,
    reference: Reference,
    native: Callable[[str, list[Path]], list[int]],
    video: Callable[[int], Path],
) -> None:
    videos = [video(seed) for seed in CASES[case]]
    text = "Describe what you see."
    expected = reference.greedy(text, videos, MAX_TOKENS)

    answer = ask(client, user_message(text, [f"file://{v}" for v in videos]))

    assert token_ids(answer.choices[0].logprobs.content) == expected == native(text, videos)
    assert answer.usage.completion_tokens == len(expected)


def test_different_videos_give_different_tokens(
    client: openai.OpenAI, video: Callable[[int], Path]
) -> None:
    answers = [ask(client, user_message("What happens?", [data_url(video(s))])) for s in (5, 6)]
    first, second = (token_ids(a.choices[0].logprobs.content) for a in answers)
    assert first != second
    assert answers[0].usage.prompt_tokens > NUM_FRAMES * 16  # the video's tokens are counted


def test_vllm_ran_no_vision_tower_and_the_kv_came_over_nixl(
    graph: RunningGraph, client: openai.OpenAI, video: Callable[[int], Path]
) -> None:
    through_the_kv_handoff(
        graph, lambda: ask(client, user_message("Count the frames.", [f"file://{video(7)}"]))
    )

    assert worker_stat(graph, "PrefillWorker", "prefills") >= 1
    wait_for_stat(graph, "PrefillWorker", "vllm_videos_from_embeddings")
    kv_reads = wait_for_stat(graph, "DecodeWorker", "vllm_kv_transfers")
    assert kv_reads >= 1 and worker_stat(graph, "DecodeWorker", "vllm_kv_bytes") >= 0
    for worker in ("PrefillWorker", "DecodeWorker"):
        assert worker_stat(graph, worker, "vllm_vision_tower_runs") == 0
    # `videos_from_embeddings` is our plugin's model's own counter: vLLM found it through
    # the entry point. The decode side computed no video position of a handed-off prompt
    # (they came with the KV): its vLLM ran only videos of prompts it prefilled itself
    # (earlier tests' requests that found no prefill worker; a prefix hit runs none).
    decode = decode_stats(graph, ("vllm_videos_from_embeddings", "local_prefill_media"))
    assert decode["vllm_videos_from_embeddings"] <= decode["local_prefill_media"], decode
    assert worker_stat(graph, "EncodeWorker", "media_encoded") >= 1


def test_min_tokens_holds_across_the_kv_handoff(
    graph: RunningGraph, client: openai.OpenAI, video: Callable[[int], Path]
) -> None:
    """The prefill leg makes one token: vLLM refused the request's min_tokens there (a 500)."""
    messages = user_message("What happens?", [f"file://{video(4)}"])
    answer = through_the_kv_handoff(
        graph,
        lambda: ask_model(
            client, "tiny", messages, MAX_TOKENS, extra_body={"min_tokens": MAX_TOKENS}
        ),
    )

    assert answer.usage.completion_tokens == MAX_TOKENS


def vllm_engine_process(worker: int) -> int:
    """The pid of the vLLM engine process a worker started (named by vLLM)."""
    engines = [p for p in descendants(worker) if process_name(p) == "VLLM::EngineCor"]
    assert len(engines) == 1, f"worker {worker}'s vLLM engine processes: {engines}"
    return engines[0]


@pytest.mark.timeout(RESTARTED_S + 120)
def test_killing_the_decode_workers_vllm_mid_stream_is_a_clean_error_and_the_graph_recovers(
    graph: RunningGraph,
    client: openai.OpenAI,
    reference: Reference,
    video: Callable[[int], Path],
) -> None:
    """A dead vLLM engine stops its worker too (`VllmEngine.watch`), so a fresh one serves.

    Killing the worker itself takes the same way back (the supervisor starts a new
    one), less the watch: the fault tests kill native workers, and each vLLM restart
    costs this 2-core machine most of a minute, so only the engine is killed here.
    """
    [victim] = [i["pid"] for i in instances(graph)["DecodeWorker"]]
    target = vllm_engine_process(victim)
    body = {
        "model": "tiny",
        "messages": user_message("Tell a long story.", [f"file://{video(8)}"]),
        "max_tokens": 3000,
        "ignore_eos": True,
        "stream": True,
    }
    stream = stream_with_fault(
        graph.base_url,
        body,
        120,
        lambda: os.kill(target, signal.SIGKILL),
        when=lambda stream: bool(stream.text),
    )
    # Tokens came, then the engine died: the stream ends with an error event, not cut off.
    assert stream.text and stream.kind == "errored", (stream.text, stream.lost)

    wait_for("the worker whose vLLM died to exit", lambda: not alive(victim))
    wait_for(
        "a new DecodeWorker",
        lambda: {i["pid"] for i in instances(graph)["DecodeWorker"]} - {victim},
    )
    clip = video(9)
    answer = ask(client, user_message("What happens?", [f"file://{clip}"]))
    expected = reference.greedy("What happens?", [clip], MAX_TOKENS)
    assert token_ids(answer.choices[0].logprobs.content) == expected


def instances(graph: RunningGraph) -> dict[str, list[dict]]:
    return httpx.get(f"{graph.base_url}/health", timeout=10).json()["instances"]


def wait_for(what: str, probe: Callable[[], T], timeout_s: float = RESTARTED_S) -> T:
    deadline = time.monotonic() + timeout_s
    while not (value := probe()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:.0f} s"
        time.sleep(0.5)
    return value


def wait_for_stat(graph: RunningGraph, component: str, stat: str) -> float:
    """The workers refresh vLLM's counters every second: wait for a non-zero one."""
    return wait_for(f"{component} {stat} > 0", lambda: worker_stat(graph, component, stat), 30)


PREFILL_PATHS = ("vllm_kv_handoffs", "local_prefills", "prefill_fallbacks")
"""The decode worker's counts of where each request's prompt was prefilled."""


def prefill_paths(graph: RunningGraph) -> dict[str, float]:
    """`PREFILL_PATHS` of the decode worker."""
    return decode_stats(graph, PREFILL_PATHS)


def decode_stats(graph: RunningGraph, stats: tuple[str, ...]) -> dict[str, float]:
    """The decode worker's `stats`, all from one /metrics round that includes it."""

    def read() -> dict[str, float] | None:
        metrics = httpx.get(f"{graph.base_url}/metrics").text
        found = {stat: component_stat(metrics, "DecodeWorker", stat) for stat in stats}
        return {k: sum(v.values()) for k, v in found.items()} if all(found.values()) else None

    return wait_for("the DecodeWorker's stats in /metrics", read, 30)


def through_the_kv_handoff(graph: RunningGraph, send: Callable[[], T], tries: int = 3) -> T:
    """`send()`'s answer, from a try whose KV the decode worker's vLLM pulled from prefill's.

    The decode worker prefills a prompt itself when it finds no prefill worker
    listed or answering; CI saw video requests take that path on a loaded host.
    Such an answer is right (the exactness tests check its tokens) but shows no
    handoff, so the request is sent again; no handoff in `tries` fails, with the paths taken.
    """
    taken = []
    for _ in range(tries):
        before = prefill_paths(graph)
        answer = send()
        after = prefill_paths(graph)
        moved = {stat: after[stat] - before[stat] for stat in PREFILL_PATHS}
        if moved["vllm_kv_handoffs"] >= 1:  # a request lost before its first reply runs twice
            return answer
        taken.append(moved)
    pytest.fail(f"no try of {tries} went through the KV handoff; each try's paths: {taken}")
