"""Bad inputs are refused up front, with what to do about them, and leave the engine clean."""

from __future__ import annotations

import numpy as np
import pytest


def test_a_prompt_longer_than_max_model_len_is_refused(engine):
    with pytest.raises(ValueError, match="max-model-len"):
        engine.add_request("long", [1] * engine.max_model_len)


def test_video_placeholders_must_match_the_videos(engine, videos):
    embeddings = engine.encode_video(videos[0])
    with pytest.raises(ValueError, match="one placeholder per image or video"):
        engine.add_request("none", [1, 10, 11], [embeddings])
    with pytest.raises(ValueError, match="one placeholder per image or video"):
        engine.add_request("two", [1, engine.video_token_id, engine.video_token_id], [embeddings])


def test_an_image_placeholder_without_its_image_is_refused(engine):
    image_token_id = engine.tokenizer.convert_tokens_to_ids("<image>")
    with pytest.raises(ValueError, match=r"\['image'\] but the media given are none"):
        engine.add_request("img", [1, image_token_id, 10])


def test_frames_must_be_uint8_rgb(engine):
    with pytest.raises(ValueError, match=r"uint8 RGB frames \[N, H, W, 3\]"):
        engine.encode_video(np.zeros((2, 32, 32, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8 RGB"):
        engine.encode_video(np.zeros((32, 32, 3), dtype=np.uint8))


def test_request_ids_must_be_unique_while_running(engine, prompt):
    ids = prompt("USER: Hi ASSISTANT:")
    engine.add_request("dup", ids)
    with pytest.raises(ValueError, match="already running"):
        engine.add_request("dup", ids)
    engine.abort("dup")
