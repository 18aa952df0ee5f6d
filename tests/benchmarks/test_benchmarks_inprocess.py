"""The in-process baseline that `benchmarks.compare` measures the graphs against.

It runs the tiny model's engine and media pipeline in the benchmark's own
process, so a change to the engine's or the encode path's types can break it
without any graph test noticing: a whole comparison then measured video
requests failing at once (AttributeError) as the baseline's speed. Here it
answers a video, an image and a text request in full.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from benchmarks.inprocess import InProcess
from benchmarks.loadgen.workload import PreparedRequest
from engine import resolve_model
from media import MediaOptions, decode_video_sync
from media.samples import write_sample_video

MAX_TOKENS = 6


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny checkpoint in a fresh cache."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIDGRAPH_CACHE", str(tmp_path_factory.mktemp("vidgraph-cache")))
        yield Path(resolve_model("tiny"))


def chat(kind: str, text: str, url: str | None = None) -> PreparedRequest:
    content: list[dict] = [{"type": "text", "text": text}]
    if url:
        content.append(
            {"type": "video_url" if kind == "video" else "image_url", kind + "_url": {"url": url}}
        )
    body = {
        "model": "tiny",
        "messages": [{"role": "user", "content": content}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    return PreparedRequest(kind=kind, payload=json.dumps(body).encode())


def data_url(path: Path, mime: str) -> str:
    return f"data:{mime};base64," + base64.b64encode(path.read_bytes()).decode()


async def test_video_image_and_text_requests_are_answered_in_full(
    tiny: Path, tmp_path: Path
) -> None:
    clip = write_sample_video(tmp_path / "clip.mp4", seconds=1.5, fps=8, width=80, height=48)
    png = tmp_path / "frame.png"
    frames = decode_video_sync(clip.read_bytes(), MediaOptions(num_frames=1).video_sampling(None))
    Image.fromarray(frames.frames[0]).save(png)
    baseline = await InProcess.load("tiny")
    try:
        for request in (
            chat("video", "What happens?", data_url(clip, "video/mp4")),
            chat("image", "What is it?", data_url(png, "image/png")),
            chat("text", "Tell a story."),
        ):
            record = await baseline.send(request)
            assert record.error is None, (request.kind, record.error)
            assert record.usage_output_tokens == MAX_TOKENS, request.kind
    finally:
        await baseline.close()
