"""The video generation graph end to end: the openai client, real workers, real etcd, PyAV.

One graph for the module (a frontend and two tiny-Wan workers, each with
room for one waiting job) and the in-process `WanPipeline` on the same
checkpoint as the reference. Tests may run in any order: the one that kills
a worker waits until the graph has two workers again.
"""

from __future__ import annotations

import base64
import functools
import io
import os
import signal
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest
import wan_reference

from benchmarks.systems import component_stat
from engine import resolve_model
from graphs.serve import ROOT, RunningGraph, serve_graph
from videogen import VideoJob, VideoStore
from videogen.mp4 import decode_mp4, encode_mp4

# The openai client marks its video methods deprecated (the hosted API's end date).
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
warnings.filterwarnings("ignore", category=DeprecationWarning, module="openai")

MODEL = "tiny-wan"
SMALL = {"num_frames": 5, "num_inference_steps": 3}  # with size 32x32: a fraction of a second
LONG = {"num_frames": 5, "num_inference_steps": 2000}  # seconds: long enough to watch and stop


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny Wan in a fresh cache, shared by this process and the graph's workers."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIDGRAPH_CACHE", str(tmp_path_factory.mktemp("vidgraph-cache")))
        yield Path(resolve_model(MODEL))


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


@pytest.fixture(scope="module")
def graph(
    wan_dir: Path, store_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGraph]:
    with serve_graph(
        "graphs.videogen",
        ROOT / "configs" / "videogen.yaml",
        f"--VideoGenerationWorker.storage-url={store_dir}",
        "--VideoGenerationWorker.max-queue=1",
        "--VideoGenerationWorker.max-steps=2000",
        log_path=tmp_path_factory.mktemp("videogen") / "serve.log",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def client(graph: RunningGraph) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{graph.base_url}/v1", api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def wan_in_process(wan_dir: Path) -> Callable[..., np.ndarray]:
    """`WanPipeline` called here, on one thread as the workers run it: uint8 frames."""
    from diffusers import WanPipeline

    return functools.partial(wan_reference.frames, wan_reference.load(WanPipeline, wan_dir))


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 120.0) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout_s:.0f} s")


def worker_stat(graph: RunningGraph, stat: str) -> float:
    """A VideoGenerationWorker stat summed over its live instances, from /metrics."""
    metrics = httpx.get(f"{graph.base_url}/metrics").text
    return sum(component_stat(metrics, "VideoGenerationWorker", stat).values())


def test_create_and_poll_gives_the_mp4_wan_makes_in_process(client, wan_in_process) -> None:
    video = client.videos.create_and_poll(
        prompt="a red car at night",
        model=MODEL,
        size="30x34",  # rounded to multiples of 16
        extra_body={"num_frames": 6, "num_inference_steps": 3, "seed": 7},  # 6 -> 4k+1 = 5
    )
    assert (video.status, video.progress, video.size) == ("completed", 100, "32x32")
    assert (video.num_frames, video.seed, video.seconds) == (5, 7, "0.3125")
    mp4 = client.videos.download_content(video.id).read()
    frames = decode_mp4(mp4)
    assert frames.shape == (5, 32, 32, 3)

    expected = wan_in_process("a red car at night", seed=7, size=32, num_frames=5, steps=3)
    assert np.array_equal(decode_mp4(encode_mp4(expected, fps=16)), frames)
    other_seed = wan_in_process("a red car at night", seed=8, size=32, num_frames=5, steps=3)
    assert not np.array_equal(decode_mp4(encode_mp4(other_seed, fps=16)), frames)

    thumbnail = client.videos.download_content(video.id, variant="thumbnail").read()
    assert thumbnail[:4] == b"RIFF" and thumbnail[8:12] == b"WEBP"
    assert video.id in [v.id for v in client.videos.list(order="desc")]


def test_progress_rises_while_it_runs_and_delete_stops_the_job(client, graph) -> None:
    video = client.videos.create(prompt="clouds", model=MODEL, size="32x32", extra_body=LONG)
    seen: set[int] = set()

    def two_intermediate_values() -> bool:
        now = client.videos.retrieve(video.id)
        assert now.status in ("queued", "in_progress"), now
        if 0 < now.progress < 100:
            seen.add(now.progress)
        return len(seen) >= 2

    wait_for(two_intermediate_values, "two intermediate progress values")
    assert sorted(seen)[0] < sorted(seen)[-1]
    deleted = client.videos.delete(video.id)
    assert (deleted.id, deleted.deleted, deleted.object) == (video.id, True, "video.deleted")
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    wait_for(lambda: worker_stat(graph, "video_jobs_cancelled") >= 1, "the worker counts it")
    assert worker_stat(graph, "video_jobs_running") == 0


def test_generations_answer_with_a_url_and_with_b64_json(graph) -> None:
    body = {"prompt": "a dog", "model": MODEL, "size": "32x32", "seed": 3, **SMALL}
    by_url = httpx.post(f"{graph.base_url}/v1/videos/generations", json=body, timeout=120)
    assert by_url.status_code == 200, by_url.text
    answer = by_url.json()
    assert (answer["object"], answer["status"], answer["progress"]) == ("video", "completed", 100)
    assert answer["inference_time_s"] > 0
    mp4 = httpx.get(answer["data"][0]["url"]).content
    assert decode_mp4(mp4).shape == (5, 32, 32, 3)

    inline = httpx.post(
        f"{graph.base_url}/v1/videos/generations",
        json={**body, "response_format": "b64_json"},
        timeout=120,
    )
    assert inline.status_code == 200, inline.text
    assert inline.json()["id"] != answer["id"]
    # Another job, perhaps on the other worker: the same seed, the same bytes.
    inline_mp4 = base64.b64decode(inline.json()["data"][0]["b64_json"])
    assert np.array_equal(decode_mp4(inline_mp4), decode_mp4(mp4))


@pytest.mark.parametrize(
    ("body", "status", "param"),
    [
        ({"prompt": "x", "model": "sora-2"}, 404, "model"),
        ({"prompt": "x", "size": "wide"}, 400, "size"),
        ({"prompt": "x", "num_frames": 0}, 400, "num_frames"),
        ({"prompt": "x", "num_inference_steps": 2001}, 400, "num_inference_steps"),
        ({"prompt": "x", "size": "1024x1024", "num_frames": 9}, 413, "size"),
        ({"prompt": ""}, 400, "prompt"),
        ({"prompt": "x", "fps": "fast"}, 400, "fps"),
        ({"prompt": "x", "quality": "high"}, 400, "quality"),
        ({"model": MODEL}, 400, "prompt"),
    ],
)
def test_bad_input_is_refused_with_its_status_and_an_openai_error(graph, body, status, param):
    for path in ("/v1/videos", "/v1/videos/generations"):
        refused = httpx.post(f"{graph.base_url}{path}", json=body, timeout=30)
        assert refused.status_code == status, (path, refused.text)
        error = refused.json()["error"]
        assert error["param"] == param and error["message"], error


def test_the_openai_client_gets_the_same_refusals_from_its_multipart_form(client) -> None:
    with pytest.raises(openai.BadRequestError, match="size"):
        client.videos.create(prompt="x", model=MODEL, size="wide")
    with pytest.raises(openai.NotFoundError, match="sora-2"):
        client.videos.create(prompt="x", model="sora-2")
    png = io.BytesIO()
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(png, format="PNG")
    with pytest.raises(openai.BadRequestError, match="text-to-video") as refused:
        client.videos.create(
            prompt="x", model=MODEL, input_reference=("ref.png", png.getvalue(), "image/png")
        )
    assert refused.value.body["param"] == "input_reference"
    for missing in ("video_" + "0" * 32, "not-an-id"):
        with pytest.raises(openai.NotFoundError):
            client.videos.retrieve(missing)
        with pytest.raises(openai.NotFoundError):
            client.videos.download_content(missing)


def test_full_queues_answer_429_with_retry_after_and_queued_jobs_can_be_deleted(
    client, graph
) -> None:
    """Two workers, each running one job with one waiting: the fifth job finds no room."""
    jobs = [
        client.videos.create(prompt=f"job {i}", model=MODEL, size="32x32", extra_body=LONG)
        for i in range(4)
    ]
    refused = httpx.post(
        f"{graph.base_url}/v1/videos", json={"prompt": "one more", "model": MODEL, **LONG}
    )
    assert refused.status_code == 429, refused.text
    assert refused.headers["retry-after"] and refused.json()["error"]["code"] == "queue_full"
    wait_for(
        lambda: (
            sorted(client.videos.retrieve(j.id).status for j in jobs)
            == ["in_progress", "in_progress", "queued", "queued"]
        ),
        "one job running on each worker, one waiting",
    )
    for job in jobs:
        client.videos.delete(job.id)
    wait_for(
        lambda: (
            worker_stat(graph, "video_jobs_running") + worker_stat(graph, "video_jobs_waiting") == 0
        ),
        "both workers idle again",
    )
    assert client.videos.create_and_poll(
        prompt="after", model=MODEL, size="32x32", extra_body=SMALL
    ).status == ("completed")


def test_a_job_whose_worker_is_killed_fails_and_another_worker_serves_the_next(
    client, graph, store_dir
) -> None:
    video = client.videos.create(prompt="doomed", model=MODEL, size="32x32", extra_body=LONG)
    wait_for(lambda: client.videos.retrieve(video.id).progress > 0, "the job is running")
    record = VideoStore(str(store_dir)).load_job(video.id)
    assert isinstance(record, VideoJob) and record.worker is not None
    os.kill(record.worker.pid, signal.SIGKILL)

    failed = wait_for(
        lambda: (v := client.videos.retrieve(video.id)).status == "failed" and v,
        "the job fails",
        timeout_s=60,
    )
    assert failed.error.code == "worker_lost" and "worker" in failed.error.message

    after = client.videos.create_and_poll(
        prompt="next", model=MODEL, size="32x32", extra_body=SMALL
    )
    assert after.status == "completed"
    served_by = VideoStore(str(store_dir)).load_job(after.id).worker
    assert served_by is not None and served_by.pid != record.worker.pid

    def two_workers_again() -> bool:
        workers = httpx.get(f"{graph.base_url}/health").json()["instances"]
        pids = [w["pid"] for w in workers["VideoGenerationWorker"]]
        return len(pids) == 2 and record.worker.pid not in pids

    wait_for(two_workers_again, "the supervisor's replacement worker", timeout_s=120)
