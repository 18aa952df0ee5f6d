"""`/v1/frames/descriptions` and the RunPod handler on a real graph, against `generate()`.

Frames are described with the tiny LLaVA-NeXT v1.6 image model
(`configs/agg-llava-next.yaml`, the RunPod worker's default), the model of the
per-frame pipelines the route replaces, so this module starts its own graph
instead of the package's Qwen3-VL one. That config refuses videos, so every
description equal to `generate()` also shows the route sent its frame as an
image (LLaVA-NeXT's anyres path), not as a one-frame video.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import torch
from apps_helpers import MAX_FRAMES_PER_REQUEST, TIMEOUT, serve_apps_graph
from transformers import AutoProcessor, LlavaNextForConditionalGeneration

from engine import resolve_model
from graphs.serve import RunningGraph
from media import MediaOptions, decode_image_sync, decode_video_sync, png
from media.samples import sample_frames
from protocol.apps import DEFAULT_FRAME_PROMPT
from serverless import runpod_worker

MODEL = "tiny-llava-next"
"""The model of `configs/agg-llava-next.yaml`."""
MAX_TOKENS = 8
HOSTILE = "http://169.254.169.254/latest/meta-data/"


class ImageReference:
    """Greedy text from `transformers` `generate()` for one image and a prompt."""

    def __init__(self, model_dir: Path) -> None:
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = LlavaNextForConditionalGeneration.from_pretrained(model_dir).eval()

    def describe(self, image: bytes, prompt: str) -> str:
        pixels = decode_image_sync(image, MediaOptions()).frames[0]
        content = [{"type": "image"}, {"type": "text", "text": prompt}]
        text = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )
        inputs = self.processor(text=text, images=[pixels], return_tensors="pt")
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        return self.processor.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        )


@pytest.fixture(scope="module")
def llava_dir(model_cache: Path) -> Path:
    return Path(resolve_model(MODEL))


@pytest.fixture(scope="module")
def graph(
    llava_dir: Path, media_dir: Path, upload_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGraph]:
    yield from serve_apps_graph("agg-llava-next", media_dir, upload_dir, tmp_path_factory)


@pytest.fixture(scope="module")
def reference(llava_dir: Path) -> ImageReference:
    return ImageReference(llava_dir)


@pytest.fixture(scope="module")
def frames(media_dir: Path, media_server: str) -> tuple[list[str], list[bytes | None]]:
    """8 frame URLs of every kind (file, http, data:), index 2 a 404 and 5 a hostile address."""
    urls: list[str] = []
    images: list[bytes | None] = []
    for i in range(8):
        image = png(sample_frames(1, 64 + 8 * i, 48, seed=100 + i)[0])
        (media_dir / f"frame-{i}.png").write_bytes(image)
        urls.append(
            [
                f"file://{media_dir}/frame-{i}.png",
                f"{media_server}/frame-{i}.png",
                "data:image/png;base64," + base64.b64encode(image).decode(),
            ][i % 3]
        )
        images.append(image)
    urls[2], images[2] = f"{media_server}/no-such-frame.png", None
    urls[5], images[5] = HOSTILE, None
    return urls, images


def describe(graph: RunningGraph, body: dict) -> httpx.Response:
    return httpx.post(f"{graph.base_url}/v1/frames/descriptions", json=body, timeout=TIMEOUT)


def test_eight_frames_two_bad_give_six_descriptions_equal_to_generate(
    graph: RunningGraph, frames: tuple[list[str], list[bytes | None]], reference: ImageReference
) -> None:
    urls, images = frames
    expected = [
        "" if image is None else reference.describe(image, DEFAULT_FRAME_PROMPT) for image in images
    ]

    answer = describe(graph, {"frame_urls": urls, "max_tokens": MAX_TOKENS})

    assert answer.status_code == 200, answer.text
    assert answer.json() == {"descriptions": expected, "failed_indices": [2, 5], "count": 6}
    assert len({d for d in expected if d}) > 1  # different frames, different descriptions


def test_the_runpod_handler_answers_exactly_as_the_route(
    graph: RunningGraph,
    frames: tuple[list[str], list[bytes | None]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runpod_worker, "_graph_url", graph.base_url)
    urls, _ = frames
    job = {"frame_urls": urls, "max_tokens": MAX_TOKENS, "prompt": "What is shown?"}

    output = runpod_worker.handler({"id": "job-1", "input": job})

    assert output == describe(graph, job).json()
    assert output["failed_indices"] == [2, 5] and output["count"] == 6


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        {"id": "job"},
        {"input": "frames"},
        {"input": {"frame_urls": "http://example.com/a.png"}},
        {"input": {"frame_urls": []}},
        {"input": {"frame_urls": ["http://example.com/a.png"], "colour": True}},
        {"input": {"video_url": "http://example.com/v.mp4"}},
    ],
)
def test_the_runpod_handler_returns_an_error_for_invalid_input(event: object) -> None:
    output = runpod_worker.handler(event)
    assert set(output) == {"error"} and output["error"]


def test_the_video_form_describes_frames_at_the_asked_times_as_the_image_path_does(
    graph: RunningGraph, video: Callable[[int], Path]
) -> None:
    clip = video(30)
    by_fps = describe(
        graph, {"video_url": f"file://{clip}", "fps": 2.0, "max_tokens": MAX_TOKENS}
    ).json()
    sampled = decode_video_sync(clip.read_bytes(), MediaOptions(fps=2.0).video_sampling(None))
    as_images = [
        "data:image/png;base64," + base64.b64encode(png(frame)).decode() for frame in sampled.frames
    ]
    by_image = describe(graph, {"frame_urls": as_images, "max_tokens": MAX_TOKENS}).json()

    assert by_fps["timestamps_s"] == [0.0, 0.5, 1.0] == sampled.sampled_timestamps
    assert by_fps["descriptions"] == by_image["descriptions"]
    assert by_fps["failed_indices"] == [] and by_fps["count"] == 3

    at = describe(
        graph, {"video_url": f"file://{clip}", "timestamps": [1.0, 0.26], "max_tokens": MAX_TOKENS}
    ).json()
    assert at["timestamps_s"] == [0.25, 1.0]  # the frames on screen then, in time order
    assert at["descriptions"][1] == by_fps["descriptions"][2]  # the same frame at 1.0 s


def test_too_many_frames_is_a_413_and_a_bad_body_a_400(graph: RunningGraph) -> None:
    too_many = describe(graph, {"frame_urls": ["data:,x"] * (MAX_FRAMES_PER_REQUEST + 1)})
    assert too_many.status_code == 413
    assert "frames-max-per-request" in too_many.json()["error"]["message"]
    both = describe(graph, {"frame_urls": ["data:,x"], "video_url": "file:///v.mp4"})
    assert both.status_code == 400
    outside = describe(graph, {"video_url": "file:///etc/passwd", "keyframes": True})
    assert outside.status_code == 400
    assert outside.json()["error"]["code"] == "allowed-local-media-path"
