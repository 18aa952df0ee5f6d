"""Calling the app surface in tests: uploads, SSE events, and the chat request it stands for."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from graphs.serve import ROOT, RunningGraph, serve_graph
from media import MediaOptions, decode_video_sync

MODEL = "tiny-qwen3-vl"
"""The model of the package's graph (`configs/agg-qwen3vl.yaml`)."""
SAMPLING = MediaOptions(fps=2.0, min_pixels=4096, max_pixels=16384)
"""That config's EncodeWorker sampling; qwen-vl-utils' sampler, as the family's own."""
DEFAULT_VIDEO = {"fps": 2.0, "max_frames": 768}
"""The inference routes' video defaults (fps and max_frames of the Qwen3-VL demos)."""
MAX_TOKENS = 10
MAX_UPLOAD_BYTES = 1 << 20
"""The graph's `max-upload-bytes` in these tests."""
MAX_FRAMES_PER_REQUEST = 16
TIMEOUT = httpx.Timeout(120.0)


def upload(graph: RunningGraph, data: bytes, **fields: object) -> httpx.Response:
    files = {"video": ("clip.mp4", data, "video/mp4")}
    form = {
        name: str(value).lower() if isinstance(value, bool) else str(value)
        for name, value in fields.items()
    }
    return httpx.post(
        f"{graph.base_url}/v1/inference/upload", files=files, data=form, timeout=TIMEOUT
    )


def events(lines: Iterable[str]) -> list[tuple[str, dict[str, Any]]]:
    """(event name, data) of each Server-Sent Event in `lines`."""
    found, name = [], "message"
    for line in lines:
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            found.append((name, json.loads(line.removeprefix("data: "))))
            name = "message"
    return found


def serve_apps_graph(
    config: str, media_dir: Path, upload_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGraph]:
    """`graphs.agg` with `configs/CONFIG.yaml`, set up for the app surface's tests.

    Its encode workers may read `media_dir` and fetch from a local HTTP server
    (loopback, a literal IP and a high port are allowed); link-local and
    metadata addresses stay refused, whatever the options. Uploads go to
    `upload_dir`, so a test can see that it is left empty, and are capped at
    1 MiB so the limit is cheap to reach.
    """
    with serve_graph(
        "graphs.agg",
        ROOT / "configs" / f"{config}.yaml",
        f"--EncodeWorker.allowed-local-media-path={media_dir}",
        "--EncodeWorker.allow-private-ips=true",
        "--EncodeWorker.allow-direct-ip=true",
        "--EncodeWorker.allow-direct-port=true",
        f"--EncodeWorker.upload-dir={upload_dir}",
        f"--Frontend.upload-dir={upload_dir}",
        f"--Frontend.max-upload-bytes={MAX_UPLOAD_BYTES}",
        f"--Frontend.frames-max-per-request={MAX_FRAMES_PER_REQUEST}",
        f"--Frontend.frames-media={{allowed-local-media-path: {media_dir}}}",
        log_path=tmp_path_factory.mktemp(config) / "serve.log",
    ) as running:
        yield running


def sampled_video(clip: Path, video_params: dict[str, Any]) -> dict[str, Any]:
    """The `video` object an answer should carry: the clip as qwen-vl-utils samples it."""
    decoded = decode_video_sync(clip.read_bytes(), SAMPLING.video_sampling(video_params, "qwen-vl"))
    frames, height, width, _ = decoded.frames.shape
    return {"frames_sampled": frames, "sampled_width": width, "sampled_height": height}


def chat_text(
    graph: RunningGraph,
    url: str,
    prompt: str,
    video_params: dict[str, Any] = DEFAULT_VIDEO,
    **sampling: Any,
) -> dict[str, Any]:
    """The chat completion an inference request stands for: the video, then the prompt."""
    body = {
        "model": MODEL,
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "media_io_kwargs": {"video": video_params},
        **sampling,
    }
    answer = httpx.post(f"{graph.base_url}/v1/chat/completions", json=body, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_until(condition: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not true after {timeout_s:.0f} s")
        time.sleep(0.05)


def leftovers(folder: Path) -> list[Path]:
    return sorted(folder.iterdir())
