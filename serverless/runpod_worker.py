"""A RunPod-compatible worker: `handler(event) -> dict` over a graph in the same container.

RunPod calls `handler({"input": {...}})` once per job; the input is a
`/v1/frames/descriptions` body (`frame_urls`, or `video_url` with `fps`,
`timestamps` or `keyframes`), and the output is exactly that route's answer.
Invalid input returns `{"error": "..."}` (RunPod marks the job failed) and is
never an exception. The graph is started once per container, on the first job
(or at start-up by `main`), not per job, and serves every job after it; with
`VIDGRAPH_URL` set, the handler uses that running frontend instead.

    pip install 'vidgraph[runpod]'         # the optional `runpod` extra
    python -m serverless.runpod_worker

`VIDGRAPH_GRAPH` (graphs.agg) and `VIDGRAPH_CONFIG` pick the graph. The
config defaults to configs/agg-llava-next.yaml, LLaVA-NeXT v1.6 on images: the
model the serverless per-frame pipelines this worker drops into already run
(its tiny checkpoint until `VIDGRAPH_SERVE_ARGS` adds overrides:
`--Common.model=llava-hf/llava-v1.6-mistral-7b-hf --Common.device=cuda`).
This module imports and runs without `runpod` installed; only `main` needs it.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shlex
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

import httpx
from pydantic import ValidationError

from graphs.serve import ROOT, serve_graph
from protocol.apps import FramesRequest

TIMEOUT = httpx.Timeout(3600.0, connect=10.0)
_graph_lock = threading.Lock()
_graph_url: str | None = None
_running = contextlib.ExitStack()
atexit.register(_running.close)


def handler(event: Any) -> dict[str, Any]:
    """One RunPod job: the frames' descriptions, or `{"error": ...}`."""
    problem = invalid(event)
    if problem is not None:
        return {"error": problem}
    try:
        answer = httpx.post(
            f"{graph_url()}/v1/frames/descriptions", json=event["input"], timeout=TIMEOUT
        )
    except httpx.HTTPError as error:
        return {"error": f"the graph did not answer: {error!r}"}
    body = answer.json()
    if answer.status_code != 200:
        return {"error": body.get("error", {}).get("message", f"HTTP {answer.status_code}")}
    return body


def invalid(event: Any) -> str | None:
    """Why `event` is not a job this worker can run, or None."""
    if not isinstance(event, dict) or "input" not in event:
        return 'the job has no "input"; send {"input": {"frame_urls": [...]}}'
    if not isinstance(event["input"], dict):
        return '"input" must be an object, e.g. {"frame_urls": [...]}'
    try:
        FramesRequest.model_validate(event["input"])
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "input"
        return f"input.{where}: {first['msg']}" if where != "input" else first["msg"]
    return None


def graph_url() -> str:
    """The frontend this container's jobs go to, starting the graph on first use."""
    global _graph_url
    with _graph_lock:
        if _graph_url is None:
            _graph_url = os.environ.get("VIDGRAPH_URL") or _start_graph()
        return _graph_url


def _start_graph() -> str:
    graph = os.environ.get("VIDGRAPH_GRAPH", "graphs.agg")
    config = Path(os.environ.get("VIDGRAPH_CONFIG", ROOT / "configs" / "agg-llava-next.yaml"))
    overrides = shlex.split(os.environ.get("VIDGRAPH_SERVE_ARGS", ""))
    log_path = Path(tempfile.mkdtemp(prefix="vidgraph-runpod-")) / "serve.log"
    running = _running.enter_context(serve_graph(graph, config, *overrides, log_path=log_path))
    return running.base_url


def main() -> None:
    try:
        import runpod
    except ImportError:
        sys.exit("the RunPod worker needs the runpod package: pip install 'vidgraph[runpod]'")
    graph_url()  # start the graph before taking jobs, not inside the first one
    runpod.serverless.start({"handler": handler})


if __name__ == "__main__":
    main()
