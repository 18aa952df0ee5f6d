"""Qwen3-VL through the aggregated graph: tokens equal `generate()` on the frames the graph
samples (qwen-vl-utils' way), images first-class, bad media refused naming the part."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
import torch
from graph_helpers import (
    LONG_TEXT,
    answer_token_ids,
    ask_model,
    media_message,
    start_graph,
    token_ids,
    worker_stat,
)
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
from transformers.video_utils import VideoMetadata

from engine import resolve_model
from graphs.serve import RunningGraph
from media import MediaOptions, decode_image_sync, decode_video_sync

# configs/agg-qwen3vl.yaml's EncodeWorker sampling
SAMPLING = MediaOptions(fps=2.0, min_pixels=4096, max_pixels=16384)
MAX_TOKENS = 16
MODEL = "tiny-qwen3-vl"


class QwenReference:
    def __init__(self, model_dir: Path) -> None:
        self.processor = AutoProcessor.from_pretrained(model_dir)
        self.model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir).eval()

    def greedy(self, text: str, videos: list[Path], images: list[Path], max_tokens: int):
        content = [{"type": "text", "text": text}]
        content += [{"type": "image"} for _ in images] + [{"type": "video"} for _ in videos]
        prompt = self.processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        kwargs: dict = {}
        if images:
            kwargs["images"] = [
                decode_image_sync(p.read_bytes(), SAMPLING).frames[0] for p in images
            ]
        if videos:
            decoded = [
                decode_video_sync(p.read_bytes(), SAMPLING.video_sampling(None, "qwen-vl"))
                for p in videos
            ]
            kwargs["videos"] = [d.frames for d in decoded]
            kwargs["video_metadata"] = [
                VideoMetadata(
                    total_num_frames=len(d.frames), fps=d.source_fps, frames_indices=d.frame_indices
                )
                for d in decoded
            ]
            kwargs["do_sample_frames"] = False
        inputs = self.processor(text=[prompt], return_tensors="pt", **kwargs)
        with torch.inference_mode():
            out = self.model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
        return out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.fixture(scope="module")
def qwen_dir(model_dir: Path) -> Path:
    assert os.environ["VIDGRAPH_CACHE"]  # model_dir points the cache at the session's
    return Path(resolve_model("tiny-qwen3-vl"))


@pytest.fixture(scope="module")
def graph(qwen_dir: Path, media_dir: Path, tmp_path_factory) -> Iterator[RunningGraph]:
    yield from start_graph("agg", media_dir, tmp_path_factory, config="agg-qwen3vl")


@pytest.fixture(scope="module")
def qwen(qwen_dir: Path) -> QwenReference:
    return QwenReference(qwen_dir)


def _ask(client: openai.OpenAI, messages: list[dict], max_tokens: int = MAX_TOKENS, **kwargs):
    return ask_model(client, MODEL, messages, max_tokens, **kwargs)


@pytest.mark.parametrize(
    ("videos", "images"), [([1], []), ([], [1]), ([], [1, 2]), ([], []), ([2], [3])]
)
def test_greedy_tokens_equal_generate(videos, images, client, qwen, video, image) -> None:
    clips, pictures = [video(s) for s in videos], [image(s) for s in images]
    expected = qwen.greedy("Describe it.", clips, pictures, MAX_TOKENS)
    answer = _ask(client, media_message("Describe it.", clips, pictures))
    assert token_ids(answer.choices[0].logprobs.content) == expected


def test_two_videos_give_different_tokens(client, video) -> None:
    first = _ask(client, media_message("Describe it.", [video(1)], []))
    second = _ask(client, media_message("Describe it.", [video(2)], []))
    assert token_ids(first.choices[0].logprobs.content) != token_ids(
        second.choices[0].logprobs.content
    )


def test_a_long_generation_after_a_video_streams_the_same_tokens(client, qwen, video) -> None:
    expected = qwen.greedy("Describe it.", [video(5)], [], 64)
    answer = _ask(client, media_message("Describe it.", [video(5)], []), max_tokens=64, stream=True)
    assert answer_token_ids(answer) == expected


@pytest.mark.parametrize(
    ("part", "kwargs", "named"),
    [
        ("not-an-image", None, "image could not be read"),
        ("video", {"video": {"total_pixels": 1000}}, "total_pixels"),
        ("video", {"video": {"frames_per_second": 2}}, "frames_per_second"),
    ],
)
def test_bad_media_is_a_400_naming_the_part(part, kwargs, named, client, video, media_dir) -> None:
    if part == "not-an-image":
        bogus = media_dir / "bogus.png"
        bogus.write_bytes(b"this is not a png" * 10)
        messages = media_message("What?", [], [bogus])
    else:
        messages = media_message("What?", [video(1)], [])
    extra = {"media_io_kwargs": kwargs} if kwargs else {}
    with pytest.raises(openai.BadRequestError) as caught:
        _ask(client, messages, max_tokens=4, extra_body=extra)
    assert named in caught.value.message
    assert _ask(client, media_message("Still there?", [], []), max_tokens=2).choices


@pytest.fixture(scope="module")
def disagg(qwen_dir: Path, media_dir: Path, tmp_path_factory) -> Iterator[RunningGraph]:
    yield from start_graph("disagg", media_dir, tmp_path_factory, config="disagg-qwen3vl")


def test_disagg_continues_positions_after_the_kv_handoff(disagg, qwen, video, image) -> None:
    """DeepStack features cross encode -> prefill and rope_delta crosses prefill -> decode:
    a long answer after an image and a video still equals `generate()`."""
    client = openai.OpenAI(base_url=f"{disagg.base_url}/v1", api_key="none", max_retries=0)
    remote = worker_stat(disagg, "DecodeWorker", "remote_prefills")
    expected = qwen.greedy("Describe it.", [video(5)], [image(3)], 64)

    answer = _ask(client, media_message("Describe it.", [video(5)], [image(3)]), max_tokens=64)

    assert token_ids(answer.choices[0].logprobs.content) == expected
    assert worker_stat(disagg, "DecodeWorker", "remote_prefills") == remote + 1


@pytest.mark.parametrize(("images", "stream"), [([1], True), ([1, 2], False), ([], True)])
def test_disagg_images_and_text_equal_generate(images, stream, disagg, qwen, image) -> None:
    """Images and text alone through the prefill -> decode handoff, whole and streamed (a long
    question, so that each is prefilled remotely)."""
    client = openai.OpenAI(base_url=f"{disagg.base_url}/v1", api_key="none", max_retries=0)
    pictures = [image(seed) for seed in images]
    remote = worker_stat(disagg, "DecodeWorker", "remote_prefills")

    answer = _ask(client, media_message(LONG_TEXT, [], pictures), stream=stream)

    assert answer_token_ids(answer) == qwen.greedy(LONG_TEXT, [], pictures, MAX_TOKENS)
    assert worker_stat(disagg, "DecodeWorker", "remote_prefills") == remote + 1
