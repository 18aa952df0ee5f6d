"""Real graphs for the end-to-end tests: sample videos, the HF reference, a running graph.

Graphs are started once per test module (each costs several processes that
import torch); the HF reference model runs in the test process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
from graph_helpers import Reference
from PIL import Image

from engine import resolve_model
from graphs.serve import RunningGraph
from media.samples import write_sample_video


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny checkpoint in a fresh cache, shared by this process and the graphs it starts."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIDGRAPH_CACHE", str(tmp_path_factory.mktemp("vidgraph-cache")))
        yield Path(resolve_model("tiny"))


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="session")
def video(media_dir: Path) -> Callable[[int], Path]:
    """`video(seed)`: a short MP4 whose content depends on `seed`."""

    def make(seed: int) -> Path:
        path = media_dir / f"sample-{seed}.mp4"
        if not path.exists():
            write_sample_video(path, seconds=1.5, fps=8, width=80, height=48, seed=seed)
        return path

    return make


@pytest.fixture(scope="session")
def image(media_dir: Path) -> Callable[[int], Path]:
    """`image(seed)`: a 96x64 PNG of noise that depends on `seed`."""

    def make(seed: int) -> Path:
        path = media_dir / f"image-{seed}.png"
        if not path.exists():
            pixels = np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path)
        return path

    return make


@pytest.fixture(scope="session")
def reference(model_dir: Path) -> Reference:
    return Reference(model_dir)


@pytest.fixture(scope="module")
def client(graph: RunningGraph) -> openai.OpenAI:
    """The official client on the module's `graph` fixture, without retries that hide errors."""
    return openai.OpenAI(base_url=f"{graph.base_url}/v1", api_key="unused", max_retries=0)
