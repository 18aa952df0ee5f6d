"""Qwen3-VL, LLaVA-NeXT (Mistral and Vicuna templates) and LLaVA-NeXT-Video images: the
engine's greedy tokens equal `generate()`'s on the same saved-then-reloaded tiny checkpoints,
and the prompt the Processor builds is the HF processor's."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor
from transformers.video_utils import VideoMetadata

from components.processor import load_tokenizer, render_messages
from engine import Engine, SamplingParams
from engine.tiny_model import TINY_FAMILIES
from protocol.openai import ChatMessage

FPS = 10.0
RNG = np.random.default_rng(7)
IMAGES = [
    RNG.integers(0, 256, (64, 96, 3), dtype=np.uint8),
    RNG.integers(0, 256, (96, 64, 3), np.uint8),
]
VIDEOS = [RNG.integers(0, 256, (4, 64, 96, 3), dtype=np.uint8) for _ in range(2)]
VIDEO_INDICES = [0, 6, 13, 19]


@pytest.fixture(
    scope="module", params=["qwen3-vl", "llava-next", "llava-next-vicuna", "llava-next-video"]
)
def family(request, tmp_path_factory) -> tuple[str, Path, Engine, object, object]:
    path = TINY_FAMILIES[request.param].build(tmp_path_factory.mktemp(request.param))
    engine = Engine.load(path, max_num_seqs=2, max_model_len=1024)
    hf = AutoModelForImageTextToText.from_pretrained(path).eval()
    return request.param, path, engine, hf, AutoProcessor.from_pretrained(path)


def _content(images: int, videos: int) -> list[dict]:
    parts = [{"type": "image"}] * images + [{"type": "video"}] * videos
    return [*parts, {"type": "text", "text": "What is in the picture?"}]


def _engine_tokens(engine: Engine, processor, images, videos, max_tokens=24) -> list[int]:
    text = processor.apply_chat_template(
        [{"role": "user", "content": _content(len(images), len(videos))}],
        add_generation_prompt=True,
        tokenize=False,
    )
    ids = processor.tokenizer(text)["input_ids"]
    times = [i / FPS for i in VIDEO_INDICES]
    media = [engine.encode(image[None], "image") for image in images]
    media += [engine.encode(video, "video", times) for video in videos]
    engine.add_request("r", ids, media, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    tokens = []
    while engine.has_unfinished():
        tokens += [out.token_id for out in engine.step()]
    return tokens


def _hf_tokens(hf, processor, images, videos, max_tokens=24) -> list[int]:
    text = processor.apply_chat_template(
        [{"role": "user", "content": _content(len(images), len(videos))}],
        add_generation_prompt=True,
        tokenize=False,
    )
    kwargs = {"images": images} if images else {}
    if videos:
        metadata = [VideoMetadata(total_num_frames=20, fps=FPS, frames_indices=VIDEO_INDICES)]
        kwargs |= {"videos": videos, "video_metadata": metadata * len(videos)}
        kwargs["do_sample_frames"] = False
    inputs = processor(text=[text], return_tensors="pt", **kwargs)
    out = hf.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


# LLaVA-NeXT v1.6's two templates, as llava-v1.6-mistral-7b-hf and -vicuna-7b-hf write them.
TWO_IMAGE_PROMPTS = {
    "llava-next": "[INST] <image>\n<image>\nWhat is in the picture? [/INST]",
    "llava-next-vicuna": "USER: <image>\n<image>\nWhat is in the picture? ASSISTANT:",
}


def test_the_prompt_we_build_is_the_processors(family) -> None:
    """The Processor renders OpenAI image_url parts with the tokenizer's template; HF renders
    the processor's: both must give the same text."""
    name, path, _, _, processor = family
    url = {"url": "file:///picture.png"}
    parts = [{"type": "image_url", "image_url": url}] * 2
    chat = ChatMessage.model_validate(
        {"role": "user", "content": [*parts, {"type": "text", "text": "What is in the picture?"}]}
    )
    messages, media = render_messages([chat])
    ours = load_tokenizer(str(path)).apply_chat_template(
        messages, add_generation_prompt=True, tokenize=False
    )
    theirs = processor.apply_chat_template(
        [{"role": "user", "content": _content(2, 0)}], add_generation_prompt=True, tokenize=False
    )
    assert ours == theirs
    if name in TWO_IMAGE_PROMPTS:
        assert ours == TWO_IMAGE_PROMPTS[name]
    assert [m.modality for m in media] == ["image", "image"]


@pytest.mark.parametrize("images", [0, 1, 2])
def test_image_and_text_prompts_match_generate(family, images) -> None:
    _, _, engine, hf, processor = family
    shown = IMAGES[:images]
    assert _engine_tokens(engine, processor, shown, []) == _hf_tokens(hf, processor, shown, [])


def test_two_different_images_give_different_tokens(family) -> None:
    _, _, engine, _, processor = family
    first = _engine_tokens(engine, processor, [IMAGES[0]], [])
    assert first != _engine_tokens(engine, processor, [IMAGES[1]], [])


QWEN3_VL_ONLY = pytest.mark.parametrize("family", ["qwen3-vl"], indirect=True)


@QWEN3_VL_ONLY  # videos with timestamps are Qwen3-VL's
def test_qwen3_vl_image_and_video_prompt_matches_generate(family) -> None:
    _, _, engine, hf, processor = family
    ours = _engine_tokens(engine, processor, IMAGES[:1], VIDEOS[1:])
    assert ours == _hf_tokens(hf, processor, IMAGES[:1], VIDEOS[1:])


@QWEN3_VL_ONLY  # rope_delta is M-RoPE's
def test_qwen3_vl_positions_continue_after_a_kv_handoff(family) -> None:
    """Prefill in one engine, decode in another: rope_delta travels with the KV."""
    _, path, engine, hf, processor = family
    text = processor.apply_chat_template(
        [{"role": "user", "content": _content(0, 1)}], add_generation_prompt=True, tokenize=False
    )
    ids = processor.tokenizer(text)["input_ids"]
    video = engine.encode(VIDEOS[0], "video", [i / FPS for i in VIDEO_INDICES])
    sampling = SamplingParams(max_tokens=48, temperature=0.0, ignore_eos=True)
    prefill = Engine.load(path, max_num_seqs=0, max_model_len=1024)
    first, kv = prefill.prefill_export("p", ids, [video], sampling)
    assert kv.rope_delta < 0
    engine.add_prefilled("d", ids, first.token_id, kv, sampling)
    tokens = [first.token_id]
    while engine.has_unfinished():
        tokens += [out.token_id for out in engine.step()]
    expected = _hf_tokens(hf, processor, [], VIDEOS[:1], max_tokens=48)
    assert tokens[: len(expected)] == expected
    assert len(expected) > 24  # long enough that a wrong position would have shown


def test_a_saved_family_loads_its_vision_part_alone(family) -> None:
    from engine.models import Part, family_for

    _, path, engine, _, _ = family
    vision = family_for(path).load(
        path, torch.device("cpu"), torch.float32, frozenset({Part.VISION})
    )
    assert vision.kv_spec is None
    torch.testing.assert_close(
        vision.encode(IMAGES[0][None], "image").embeddings,
        engine.encode(IMAGES[0][None], "image").embeddings,
    )
