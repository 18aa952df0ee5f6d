"""`/v1/inference/url` and `/upload` on a real graph: same answers as chat, streams, uploads."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import select
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import httpx
from apps_helpers import (
    DEFAULT_VIDEO,
    MAX_TOKENS,
    MAX_UPLOAD_BYTES,
    MODEL,
    TIMEOUT,
    chat_text,
    events,
    leftovers,
    sampled_video,
    upload,
    wait_until,
)

from components.decode_worker import DecodeWorkerConfig
from components.frontend import FrontendConfig
from graphs.serve import RunningGraph

STAGES = ["queued", "fetching", "decoding", "encoding", "generating"]
NEAR_TIE = 1e-3  # as tests/graph/graph_helpers.py: top-two log-probs this close may flip
SAMPLING = {"max_tokens": MAX_TOKENS, "temperature": 0.7, "seed": 11}
VIDEO_PARAMS = {
    "fps": 8.0,
    "min_frames": 2,
    "max_frames": 6,
    "min_pixels": 1024,
    "max_pixels": 4096,
    "total_pixels": 8000,
}
"""Every qwen-vl-utils knob, away from the defaults: more, smaller frames than they give."""


def inference_url(graph: RunningGraph, url: str, prompt: str, **body: object) -> httpx.Response:
    return httpx.post(
        f"{graph.base_url}/v1/inference/url",
        json={"video_url": url, "prompt": prompt, **body},
        timeout=TIMEOUT,
    )


def test_url_and_upload_answer_as_chat_completions_does_for_the_same_video_and_sampling(
    graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    answers = {}
    for seed in (1, 2):
        clip = video(seed)
        chat = chat_text(graph, f"file://{clip}", "What happens?", **SAMPLING)
        by_url = inference_url(
            graph,
            f"file://{clip}",
            "What happens?",
            generation_params={"max_tokens": MAX_TOKENS, "seed": 11},
        )
        by_upload = upload(
            graph, clip.read_bytes(), prompt="What happens?", max_tokens=MAX_TOKENS, seed=11
        )
        assert by_url.status_code == 200, by_url.text
        assert by_upload.status_code == 200, by_upload.text
        expected = chat["choices"][0]["message"]["content"]
        for answer in (by_url.json(), by_upload.json()):
            assert answer["text"] == expected
            assert answer["usage"] == chat["usage"]
            assert answer["finish_reason"] == chat["choices"][0]["finish_reason"]
            assert answer["video"] == {
                "duration_s": 1.5,
                "fps": 8.0,
                "width": 80,
                "height": 48,
                **sampled_video(clip, DEFAULT_VIDEO),
            }
            timings = answer["timings"]
            assert 0 <= timings["queue_s"] <= timings["ttft_s"] <= timings["total_s"]
        answers[seed] = expected
    assert answers[1] != answers[2]  # different videos, different answers


def test_video_params_reach_qwen_vl_utils_sampling_by_url_and_by_upload(
    graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    clip = video(6)
    chat = chat_text(graph, f"file://{clip}", "What happens?", VIDEO_PARAMS, **SAMPLING)
    by_url = inference_url(
        graph,
        f"file://{clip}",
        "What happens?",
        video_params=VIDEO_PARAMS,
        generation_params=SAMPLING,
    )
    by_upload = upload(graph, clip.read_bytes(), prompt="What happens?", **VIDEO_PARAMS, **SAMPLING)
    expected = sampled_video(clip, VIDEO_PARAMS)
    assert expected != sampled_video(clip, DEFAULT_VIDEO)  # the parameters change the sampling
    for answer in (by_url, by_upload):
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] == chat["choices"][0]["message"]["content"]
        assert answer.json()["usage"] == chat["usage"]
        assert {name: answer.json()["video"][name] for name in expected} == expected


def test_a_stream_reports_every_stage_in_order_then_deltas_that_make_the_done_text(
    graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    body = {
        "video_url": f"file://{video(3)}",  # not seen before: every stage runs
        "prompt": "Describe it.",
        "generation_params": {"max_tokens": MAX_TOKENS, "temperature": 0},
        "stream": True,
    }
    with httpx.stream(
        "POST", f"{graph.base_url}/v1/inference/url", json=body, timeout=TIMEOUT
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = events(response.iter_lines())

    names = [name for name, _ in received]
    statuses = [data["stage"] for name, data in received if name == "status"]
    assert statuses == STAGES
    assert names == ["status"] * 5 + ["delta"] * (len(names) - 6) + ["done"]
    done = received[-1][1]
    assert "".join(data["text"] for name, data in received if name == "delta") == done["text"]
    whole = inference_url(
        graph, body["video_url"], "Describe it.", generation_params=body["generation_params"]
    )
    assert whole.json()["text"] == done["text"]
    assert done["usage"]["completion_tokens"] == MAX_TOKENS or done["finish_reason"] == "stop"


def test_unknown_parameters_and_non_videos_are_400s_that_name_the_problem(
    graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    url = f"file://{video(1)}"
    typo = inference_url(graph, url, "Hi", generation_params={"max_token": 5})
    assert typo.status_code == 400
    assert "max_token" in typo.json()["error"]["message"]

    form_typo = upload(graph, video(1).read_bytes(), prompt="Hi", max_token=5)
    assert form_typo.status_code == 400
    assert form_typo.json()["error"]["param"] == "max_token"

    text = upload(graph, b"just some text, named .mp4", prompt="Hi")
    assert text.status_code == 400
    assert text.json()["error"]["param"] == "video"
    assert "not a usable video" in text.json()["error"]["message"]

    hostile = inference_url(graph, "http://169.254.169.254/latest/meta-data", "Hi")
    assert hostile.status_code == 400
    assert hostile.json()["error"]["type"] == "invalid_request_error"


def test_no_upload_is_left_on_disk_after_success_error_or_a_client_that_goes_away(
    graph: RunningGraph, video: Callable[[int], Path], upload_dir: Path
) -> None:
    data = video(1).read_bytes()
    assert upload(graph, data, prompt="Hi", max_tokens=2).status_code == 200
    assert leftovers(upload_dir) == []
    assert upload(graph, data, prompt="Hi", max_tokens=10**6).status_code == 400  # too long
    assert leftovers(upload_dir) == []

    # Gone mid-upload: half the body sent, the file exists, then the client hangs up.
    with socket.create_connection(("127.0.0.1", graph.port)) as sock:
        sock.sendall(multipart_head() + chunk(data))
        wait_until(lambda: len(leftovers(upload_dir)) == 1, "the upload being written")
    wait_until(lambda: leftovers(upload_dir) == [], "the half upload deleted")

    # Gone mid-answer: the stream has begun, the client closes it.
    with httpx.stream(
        "POST",
        f"{graph.base_url}/v1/inference/upload",
        files={"video": ("clip.mp4", data, "video/mp4")},
        data={"prompt": "Hi", "max_tokens": "50", "stream": "true"},
        timeout=TIMEOUT,
    ) as response:
        first = next(response.iter_lines())
        assert first == "event: status"
    wait_until(lambda: leftovers(upload_dir) == [], "the streamed upload deleted")


def test_twenty_concurrent_uploads_all_get_their_own_answer(
    graph: RunningGraph, video: Callable[[int], Path], upload_dir: Path
) -> None:
    clips = {seed: video(seed).read_bytes() for seed in (4, 5)}
    expected = {
        seed: upload(graph, data, prompt="Go", max_tokens=6, temperature=0).json()["text"]
        for seed, data in clips.items()
    }
    for seed in clips:
        alone = chat_text(
            graph,
            f"file://{video(seed)}",
            "Go",
            max_tokens=6,
            temperature=0,
            logprobs=True,
            top_logprobs=2,
        )
        assert alone["choices"][0]["message"]["content"] == expected[seed]
        # Batched with the others, logits move by a few ULPs: a near-tie could flip.
        assert smallest_top_two_gap(alone) >= NEAR_TIE, f"seed {seed} has a near-tie: pick another"

    async def one(client: httpx.AsyncClient, seed: int) -> str:
        answer = await client.post(
            f"{graph.base_url}/v1/inference/upload",
            files={"video": ("clip.mp4", clips[seed], "video/mp4")},
            data={"prompt": "Go", "max_tokens": "6", "temperature": "0"},
        )
        assert answer.status_code == 200, answer.text
        return answer.json()["text"]

    async def all_of_them() -> list[str]:
        async with httpx.AsyncClient(timeout=TIMEOUT) as client:
            return await asyncio.gather(*(one(client, 4 + i % 2) for i in range(20)))

    answers = asyncio.run(all_of_them())

    assert answers == [expected[4 + i % 2] for i in range(20)]
    assert expected[4] != expected[5]
    assert leftovers(upload_dir) == []


def smallest_top_two_gap(answer: dict) -> float:
    """How close the closest greedy choice of an answer came to its runner-up, in log-prob."""
    gaps = []
    for entry in answer["choices"][0]["logprobs"]["content"]:
        first, second = sorted((t["logprob"] for t in entry["top_logprobs"]), reverse=True)[:2]
        gaps.append(first - second)
    return min(gaps)


def multipart_head(boundary: str = "vidgraphtest") -> bytes:
    """Request line, headers and the file part's head of an upload with no Content-Length."""
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="video"; filename="big.mp4"\r\n'
        "Content-Type: video/mp4\r\n\r\n"
    )
    return (
        "POST /v1/inference/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode() + chunk(part.encode())


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def read_response(sock: socket.socket) -> bytes:
    """One HTTP response (head and Content-Length body) from `sock`, left open by the server."""
    reply = b""
    while b"\r\n\r\n" not in reply:
        reply += sock.recv(65536)
    head, _, body = reply.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))
    while len(body) < length:
        body += sock.recv(65536)
    return head + b"\r\n\r\n" + body


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def frontend_pid(graph: RunningGraph) -> int:
    detail = httpx.get(f"{graph.base_url}/v1/health/detailed", timeout=TIMEOUT).json()
    return detail["components"]["Frontend"][0]["pid"]


def test_a_2_gb_upload_is_refused_at_the_limit_without_the_frontend_growing(
    graph: RunningGraph, upload_dir: Path
) -> None:
    with socket.create_connection(("127.0.0.1", graph.port), timeout=30) as sock:
        sock.sendall(
            b"POST /v1/inference/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 2147483648\r\n\r\n"
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")  # before a byte of the body

    pid = frontend_pid(graph)
    before = rss_bytes(pid)
    piece = chunk(os.urandom(64 * 1024))
    sent = 0
    with socket.create_connection(("127.0.0.1", graph.port), timeout=30) as sock:
        sock.sendall(multipart_head())
        while sent < (2 << 30):
            readable, _, _ = select.select([sock], [sock], [], 30)
            if readable:
                break
            try:
                sock.sendall(piece)
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break
            sent += len(piece)
        reply = read_response(sock)

    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"max-upload-bytes" in reply
    assert sent < MAX_UPLOAD_BYTES + (32 << 20)  # the limit, plus what socket buffers held
    assert rss_bytes(pid) - before < 64 << 20
    wait_until(lambda: leftovers(upload_dir) == [], "the refused upload deleted")


def test_health_says_ok_and_details_each_component(graph: RunningGraph) -> None:
    assert httpx.get(f"{graph.base_url}/v1/health").json() == {"status": "ok"}
    detail = httpx.get(f"{graph.base_url}/v1/health/detailed").json()
    assert detail["status"] == "ok" and detail["model"] == MODEL
    assert set(detail["components"]) == {"Frontend", "Processor", "DecodeWorker", "EncodeWorker"}
    for name in ("DecodeWorker", "EncodeWorker"):
        [worker] = detail["components"][name]
        assert worker["device"] == "cpu" and worker["model"] == MODEL
        assert worker["queue_depth"] == 0 and worker["uptime_s"] > 0
    [decoder] = detail["components"]["DecodeWorker"]
    assert decoder["capacity"] == DecodeWorkerConfig().max_num_seqs  # none in the graph's config
    assert [w["capacity"] for w in detail["components"]["EncodeWorker"]] == [None]

    def limits() -> tuple[int, int]:
        detail = httpx.get(f"{graph.base_url}/v1/health/detailed").json()
        return detail["max_inflight"], detail["max_queued"]

    # No max-inflight in the graph's config: the frontend admits from what the decode worker runs.
    wait_until(lambda: limits() == (2 * decoder["capacity"],) * 2, "limits from the capacity")


class Ticker:
    """Streams chat answers back to back through the frontend, counting their chunks, until
    stopped: a stream that is always running, whose count shows whether it kept moving."""

    def __init__(self, graph: RunningGraph) -> None:
        self.url = f"{graph.base_url}/v1/chat/completions"
        self.chunks = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        body = {
            "model": MODEL,
            "messages": [{"role": "user", "content": "Count."}],
            "max_tokens": 64,
            "ignore_eos": True,
            "stream": True,
        }
        while not self.stopping.is_set():
            with httpx.stream("POST", self.url, json=body, timeout=TIMEOUT) as response:
                assert response.status_code == 200
                for line in response.iter_lines():
                    self.chunks += line.startswith("data: {")

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=TIMEOUT.read)


def padded_data_url(path: Path, size: int) -> str:
    """`path`'s MP4 as a data URL of `size` bytes: a trailing `free` box, which demuxers
    skip, pads it, so the whole payload is decoded, hashed and probed, and the video sampled."""
    data = path.read_bytes()
    pad = size - len(data)
    padded = data + struct.pack(">I4s", pad, b"free") + bytes(pad - 8)
    return "data:video/mp4;base64," + base64.b64encode(padded).decode()


def test_a_data_url_at_the_body_limit_does_not_stall_a_running_stream(
    graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    """Issue 22: the media work of a huge data URL runs off every event loop a stream uses.

    The largest data URL the frontend takes (its default `max-request-bytes`, 64 MiB, less a
    MiB for the rest of the body: 47 MB of video) goes through the frontend, processor and
    decode worker to the encode worker, which decodes its base64, hashes and probes it. A
    stream running meanwhile must move (by its chunk count, not by a time limit) both while
    the big body is received, parsed and forwarded (until the big request's first status
    arrives) and while its media is decoded and answered (until its last event).
    """
    limit = FrontendConfig().max_request_bytes
    body = {
        "video_url": padded_data_url(video(4), (limit - (1 << 20)) * 3 // 4),
        "prompt": "Describe it.",
        "generation_params": {"max_tokens": 4, "temperature": 0},
        "stream": True,
    }
    ticker = Ticker(graph)
    try:
        wait_until(lambda: ticker.chunks > 0, "the running stream under way")
        counts = [ticker.chunks]
        with httpx.stream(
            "POST", f"{graph.base_url}/v1/inference/url", json=body, timeout=TIMEOUT
        ) as response:
            counts.append(ticker.chunks)  # the answer began: the graph took the request
            assert response.status_code == 200, response.read()[:300]
            received = events(response.iter_lines())
        counts.append(ticker.chunks)
    finally:
        ticker.stop()

    assert counts[0] < counts[1] < counts[2], counts
    name, done = received[-1]
    assert name == "done", received[-1]
    assert done["video"]["width"] == 80 and done["video"]["frames_sampled"] > 0
