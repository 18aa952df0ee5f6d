"""One aggregated graph for every app-surface test (inference, web page, frames, RunPod).

Starting a graph costs processes that import torch, so the whole package
shares this one (tiny model). Its encode workers may read the test media
folder and fetch from a local HTTP server (loopback, a literal IP and a high
port are allowed); link-local and metadata addresses stay refused, whatever
the options. Uploads go to a folder of the tests' own, so a test can see that
it is left empty, and are capped at 1 MiB so the limit is cheap to reach.
"""

from __future__ import annotations

import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from apps_helpers import MAX_FRAMES_PER_REQUEST, MAX_UPLOAD_BYTES

from engine import resolve_model
from graphs.serve import ROOT, RunningGraph, serve_graph
from media.samples import write_sample_video


@pytest.fixture(scope="package")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The tiny checkpoint in a fresh cache, shared by this process and the graph."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VIDGRAPH_CACHE", str(tmp_path_factory.mktemp("vidgraph-cache")))
        yield Path(resolve_model("tiny"))


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
    with serve_graph(
        "graphs.agg",
        ROOT / "configs" / "agg.yaml",
        f"--EncodeWorker.allowed-local-media-path={media_dir}",
        "--EncodeWorker.allow-private-ips=true",
        "--EncodeWorker.allow-direct-ip=true",
        "--EncodeWorker.allow-direct-port=true",
        f"--EncodeWorker.upload-dir={upload_dir}",
        f"--Frontend.upload-dir={upload_dir}",
        f"--Frontend.max-upload-bytes={MAX_UPLOAD_BYTES}",
        f"--Frontend.frames-max-per-request={MAX_FRAMES_PER_REQUEST}",
        f"--Frontend.frames-media={{allowed-local-media-path: {media_dir}}}",
        log_path=tmp_path_factory.mktemp("apps-graph") / "serve.log",
    ) as running:
        yield running
