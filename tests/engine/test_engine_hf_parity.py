"""Greedy tokens from the engine equal `transformers` `generate()` on the same inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from engine_variants import VARIANTS
from transformers import LlavaNextVideoForConditionalGeneration, LlavaNextVideoProcessor

PROMPTS = {
    "text only": ("USER: What is the man doing in the park? ASSISTANT:", 0),
    "one video": ("USER: <video>\nWhat happens in this video? ASSISTANT:", 1),
    "two videos": ("USER: <video>\n<video>\nCompare the two videos. ASSISTANT:", 2),
}


def hf_greedy(
    hf_model: LlavaNextVideoForConditionalGeneration,
    processor: LlavaNextVideoProcessor,
    text: str,
    videos: list[np.ndarray],
    max_tokens: int,
) -> list[int]:
    inputs = processor(text=text, videos=videos or None, return_tensors="pt")
    with torch.inference_mode():
        out = hf_model.generate(**inputs, max_new_tokens=max_tokens, do_sample=False)
    return out[0, inputs["input_ids"].shape[1] :].tolist()


@pytest.mark.parametrize("engine", VARIANTS, indirect=True)
@pytest.mark.parametrize("case", PROMPTS)
def test_greedy_tokens_equal_hf_generate(case, engine, hf_model, videos, prompt, generate):
    text, num_videos = PROMPTS[case]
    clips = videos[:num_videos]
    expected = hf_greedy(hf_model, engine.processor, text, clips, max_tokens=24)

    outputs = generate(prompt(text), [engine.encode_video(clip) for clip in clips])

    assert [out.token_id for out in outputs] == expected
    expanded = len(engine.processor(text=text, videos=clips or None)["input_ids"][0])
    assert outputs[-1].prompt_tokens == expanded


@pytest.mark.parametrize("num_frames", [8, 1], ids=["video", "image as one frame"])
def test_video_embeddings_equal_hf_video_features(num_frames, engine, hf_model, videos):
    frames = videos[1][:num_frames]
    pixels = engine.processor.video_processor(videos=[frames], return_tensors="pt")
    with torch.inference_mode():
        features = hf_model.model.get_video_features(pixels["pixel_values_videos"])
    expected = features.pooler_output[0].flatten(0, 1)

    embeddings = engine.encode_video(frames)

    assert embeddings.shape == (num_frames * engine.tokens_per_frame, 128)
    torch.testing.assert_close(embeddings, expected)


def test_different_videos_give_different_tokens(engine, videos, prompt, generate):
    ids = prompt("USER: <video>\nWhat happens in this video? ASSISTANT:")
    first = generate(ids, [engine.encode_video(videos[0])])
    second = generate(ids, [engine.encode_video(videos[1])])
    assert [o.token_id for o in first] != [o.token_id for o in second]


def test_different_prompts_give_different_tokens(prompt, generate):
    first = generate(prompt("USER: Describe the scene. ASSISTANT:"))
    second = generate(prompt("USER: Is it raining? ASSISTANT:"))
    assert [o.token_id for o in first] != [o.token_id for o in second]
