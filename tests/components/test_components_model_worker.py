"""Each model-running worker loads only the weights it runs."""

from __future__ import annotations

import pytest
from transformers import CLIPVisionModel, LlamaModel

from components.decode_worker import DecodeWorkerConfig
from components.encode_worker import EncodeWorkerConfig
from components.model_worker import _load_engine
from engine import resolve_model


@pytest.fixture(autouse=True)
def tiny_model_built(monkeypatch, tmp_path_factory):
    """Built before the tests forbid modules: building it instantiates the whole model."""
    monkeypatch.setenv("VIDGRAPH_CACHE", str(tmp_path_factory.getbasetemp() / "model-worker"))
    resolve_model("tiny")


def refuse(*args, **kwargs):
    raise AssertionError("a module this worker does not run was instantiated")


def test_the_encode_worker_never_instantiates_the_language_model(monkeypatch):
    monkeypatch.setattr(LlamaModel, "__init__", refuse)
    engine = _load_engine(EncodeWorkerConfig(), max_num_seqs=0, part="vision")
    assert engine.kv_cache is None and engine.tokens_per_frame > 0
    with pytest.raises(ValueError, match="without the language model"):
        engine.add_request("r", [1, 2, 3])


def test_the_decode_worker_never_instantiates_the_vision_tower(monkeypatch):
    monkeypatch.setattr(CLIPVisionModel, "__init__", refuse)
    config = DecodeWorkerConfig(max_model_len=256, enable_prefix_caching=False)
    engine = _load_engine(config, max_num_seqs=2, part="language")
    assert engine.block_manager.num_blocks == 2 * 256 // 16
    assert not engine.block_manager.enable_prefix_caching
