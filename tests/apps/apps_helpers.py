"""Calling the app surface in tests: uploads, SSE events, and the chat request it stands for."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import httpx

from graphs.serve import RunningGraph

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


def chat_text(graph: RunningGraph, url: str, prompt: str, **sampling: Any) -> dict[str, Any]:
    """The chat completion an inference request stands for: the video, then the prompt."""
    body = {
        "model": "tiny",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "video_url", "video_url": {"url": url}},
                    {"type": "text", "text": prompt},
                ],
            }
        ],
        "media_io_kwargs": {"video": {"fps": 2.0, "max_frames": 768}},
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
