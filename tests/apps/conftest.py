"""The app-surface tests' graph: tiny Qwen3-VL, aggregated, shared by the package.

Starting a graph costs processes that import torch, so the inference and web
page tests share this one. The frames tests (`test_apps_frames.py`) describe
images with the LLaVA-NeXT v1.6 image model and start their own graph in
their module.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps_helpers import MODEL, serve_apps_graph

from engine import resolve_model
from graphs.serve import RunningGraph
from media.samples import write_sample_video


@pytest.fixture(scope="package")
def model_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh `VIDGRAPH_CACHE`, shared by this process and the graphs it starts."""
    with pytest.MonkeyPatch.context() as env:
        cache = tmp_path_factory.mktemp("vidgraph-cache")
        env.setenv("VIDGRAPH_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="package")
def model_dir(model_cache: Path) -> Path:
    """The tiny Qwen3-VL checkpoint, built before the graph's workers would race to."""
    return Path(resolve_model(MODEL))


@pytest.fixture(scope="package")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apps-media")


@pytest.fixture(scope="package")
def upload_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("apps-uploads")


@pytest.fixture(scope="package")
def video(media_dir: Path) -> Callable[[int], Path]:
    """`video(seed)`: a short MP4 whose content depends on `seed`."""

    def make(seed: int) -> Path:
        path = media_dir / f"sample-{seed}.mp4"
        if not path.exists():
            write_sample_video(path, seconds=1.5, fps=8, width=80, height=48, seed=seed)
        return path

    return make


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="package")
def media_server(media_dir: Path) -> Iterator[str]:
    """`http://127.0.0.1:PORT`, serving `media_dir` (a missing name is a 404)."""
    handler = lambda *a: _Quiet(*a, directory=str(media_dir))  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="package")
def graph(
    model_dir: Path, media_dir: Path, upload_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningGraph]:
    yield from serve_apps_graph("agg-qwen3vl", media_dir, upload_dir, tmp_path_factory)
