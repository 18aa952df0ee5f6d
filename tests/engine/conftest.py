"""One tiny checkpoint, engine and HF reference model per test session; synthetic videos."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from engine_variants import VARIANTS
from transformers import LlavaNextVideoForConditionalGeneration

from engine import Engine, SamplingParams, StepOutput, build_tiny_model

GREEDY = SamplingParams(temperature=0, max_tokens=24)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def engine(tiny_model_dir: Path, request: pytest.FixtureRequest) -> Engine:
    settings = VARIANTS[getattr(request, "param", "default")]
    return Engine.load(tiny_model_dir, device="cpu", dtype="float32", max_num_seqs=8, **settings)


@pytest.fixture(autouse=True)
def _engine_left_idle(request: pytest.FixtureRequest) -> None:
    """A test that leaves requests running in the shared engine would skew the next one."""
    yield
    if "engine" in request.fixturenames:
        assert not request.getfixturevalue("engine").has_unfinished()


@pytest.fixture(scope="session")
def hf_model(tiny_model_dir: Path) -> LlavaNextVideoForConditionalGeneration:
    return LlavaNextVideoForConditionalGeneration.from_pretrained(tiny_model_dir).eval()


@pytest.fixture(scope="session")
def videos() -> list[np.ndarray]:
    """Random uint8 RGB frames, fixed seeds; sizes differ, so the engine must resize them."""
    sizes = [(48, 80), (100, 60), (64, 64)]
    return [
        np.random.default_rng(seed).integers(0, 256, (8, h, w, 3), dtype=np.uint8)
        for seed, (h, w) in enumerate(sizes)
    ]


@pytest.fixture
def generate(engine: Engine) -> Callable[..., list[StepOutput]]:
    """Runs one request alone to the end and returns its outputs."""

    def run(
        prompt_ids: list[int],
        embeddings: list[torch.Tensor] | None = None,
        sampling: SamplingParams | None = None,
        request_id: str = "alone",
    ) -> list[StepOutput]:
        engine.add_request(request_id, prompt_ids, embeddings, sampling or GREEDY)
        outputs: list[StepOutput] = []
        while engine.has_unfinished():
            outputs += engine.step()
        return outputs

    return run


@pytest.fixture(scope="session")
def prompt(engine: Engine) -> Callable[[str], list[int]]:
    """Token ids of a chat-formatted prompt, as the processor component builds them."""
    return lambda text: engine.tokenizer(text).input_ids
