"""LLaVA-NeXT v1.6 (images) through the aggregated and disaggregated graphs: anyres tokens
equal `generate()`, and its config's `enable-video: false` refuses videos by name while images
still work."""

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
    worker_stats,
)
from transformers import AutoProcessor, LlavaNextForConditionalGeneration

from engine import resolve_model
from graphs.serve import RunningGraph
from media import MediaOptions, decode_image_sync

MODEL = "tiny-llava-next"
MAX_TOKENS = 16


@pytest.fixture(scope="module")
def llava_dir(model_dir: Path) -> Path:
    assert os.environ["VIDGRAPH_CACHE"]  # model_dir points the cache at the session's
    return Path(resolve_model(MODEL))


@pytest.fixture(scope="module")
def graph(llava_dir: Path, media_dir: Path, tmp_path_factory) -> Iterator[RunningGraph]:
    yield from start_graph("agg", media_dir, tmp_path_factory, config="agg-llava-next")


@pytest.fixture(scope="module")
def greedy(llava_dir: Path):
    processor = AutoProcessor.from_pretrained(llava_dir)
    model = LlavaNextForConditionalGeneration.from_pretrained(llava_dir).eval()

    def generate(text: str, images: list[Path]) -> list[int]:
        content = [{"type": "text", "text": text}] + [{"type": "image"} for _ in images]
        prompt = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        pixels = [decode_image_sync(p.read_bytes(), MediaOptions()).frames[0] for p in images]
        inputs = processor(text=[prompt], images=pixels or None, return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        return out[0, inputs["input_ids"].shape[1] :].tolist()

    return generate


@pytest.mark.parametrize("images", [[1], [1, 2], []])
def test_greedy_tokens_equal_generate(images, client, greedy, image) -> None:
    pictures = [image(seed) for seed in images]
    answer = ask_model(client, MODEL, media_message("What is it?", [], pictures), MAX_TOKENS)
    assert token_ids(answer.choices[0].logprobs.content) == greedy("What is it?", pictures)


def test_two_images_give_different_tokens(client, image) -> None:
    answers = [
        ask_model(client, MODEL, media_message("What is it?", [], [image(s)]), MAX_TOKENS)
        for s in (1, 2)
    ]
    first, second = (token_ids(a.choices[0].logprobs.content) for a in answers)
    assert first != second


def test_a_video_is_refused_naming_the_modality_and_images_still_work(client, video, image) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        ask_model(client, MODEL, media_message("What?", [video(1)], []), 4)
    assert "enable-video" in caught.value.message
    assert ask_model(client, MODEL, media_message("What?", [], [image(1)]), 2).choices


@pytest.fixture(scope="module")
def disagg(llava_dir: Path, media_dir: Path, tmp_path_factory) -> Iterator[RunningGraph]:
    yield from start_graph("disagg", media_dir, tmp_path_factory, config="disagg-llava-next")


@pytest.mark.parametrize(("images", "stream"), [([1], False), ([1, 2], True), ([], False)])
def test_disagg_tokens_equal_generate(images, stream, disagg, greedy, image) -> None:
    """Base + tile embeddings cross encode -> prefill over NIXL, the KV prefill -> decode (a
    long question: text alone is prefilled remotely too)."""
    client = openai.OpenAI(base_url=f"{disagg.base_url}/v1", api_key="none", max_retries=0)
    pictures = [image(seed) for seed in images]
    remote = worker_stat(disagg, "DecodeWorker", "remote_prefills")
    read = worker_stat(disagg, "PrefillWorker", "embedding_bytes_read")

    answer = ask_model(
        client, MODEL, media_message(LONG_TEXT, [], pictures), MAX_TOKENS, stream=stream
    )

    assert answer_token_ids(answer) == greedy(LONG_TEXT, pictures)
    assert worker_stat(disagg, "DecodeWorker", "remote_prefills") == remote + 1
    if pictures:
        assert worker_stat(disagg, "PrefillWorker", "embedding_bytes_read") > read
        for component in ("DecodeWorker", "PrefillWorker", "EncodeWorker"):
            assert 1.0 in worker_stats(disagg, component, "transport_nixl").values(), component
