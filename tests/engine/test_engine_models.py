"""Model families: looked up by architecture, each loading only the parts a worker runs."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from transformers import LlamaModel

from engine.models import ALL_PARTS, Part, family_for
from engine.models.llava_next_video import LlavaNextVideo

CPU, F32 = torch.device("cpu"), torch.float32


def test_the_registry_maps_an_architecture_to_its_family(tiny_model_dir):
    assert family_for(tiny_model_dir) is LlavaNextVideo


def test_an_unknown_architecture_is_refused_naming_what_is_served(tiny_model_dir, tmp_path):
    config = json.loads((tiny_model_dir / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "architectures": ["GPT2LMHead"]}))
    with pytest.raises(ValueError, match="LlavaNextVideoForConditionalGeneration"):
        family_for(tmp_path)


def test_a_vision_only_load_never_builds_the_language_model(tiny_model_dir, monkeypatch, videos):
    def refuse(*args, **kwargs):
        raise AssertionError("the language model was instantiated")

    monkeypatch.setattr(LlamaModel, "__init__", refuse)
    encoder = LlavaNextVideo.load(tiny_model_dir, CPU, F32, frozenset({Part.VISION}))

    assert encoder.kv_spec is None and not hasattr(encoder, "decoder")
    assert encoder.encode(videos[0]).num_tokens == 8 * encoder.tokens_per_frame


def test_split_loads_give_the_same_embeddings_and_logits_as_a_full_one(tiny_model_dir, videos):
    full = LlavaNextVideo.load(tiny_model_dir, CPU, F32, ALL_PARTS)
    vision = LlavaNextVideo.load(tiny_model_dir, CPU, F32, frozenset({Part.VISION}))
    language = LlavaNextVideo.load(tiny_model_dir, CPU, F32, frozenset({Part.LANGUAGE}))

    expected = full.encode(videos[1]).embeddings
    torch.testing.assert_close(vision.encode(videos[1]).embeddings, expected)
    ids = torch.tensor([1, 40, 41, 42])
    torch.testing.assert_close(
        language.compute_logits(language.embed_tokens(ids)),
        full.compute_logits(full.embed_tokens(ids)),
    )


def test_a_checkpoint_missing_a_part_is_refused(tiny_model_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "processor_config.json"):
        shutil.copy(tiny_model_dir / name, tmp_path / name)
    tensors = load_file(tiny_model_dir / "model.safetensors")
    kept = {k: v for k, v in tensors.items() if "projector" not in k}
    save_file(kept, tmp_path / "model.safetensors")

    with pytest.raises(ValueError, match="no weights for projector"):
        LlavaNextVideo.load(tmp_path, CPU, F32, frozenset({Part.VISION}))
