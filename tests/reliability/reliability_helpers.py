"""Helpers of the reliability tests: faults to inject, requests to send, counters to read."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import httpx

from benchmarks.soak import Outcome, chat
from benchmarks.systems import worker_stats_in
from graphs.serve import RunningGraph
from runtime.etcd_server import EtcdServer
from runtime.processes import alive, dies_with_parent, stop_process

T = TypeVar("T")
# The graph under test: how many processes of each component it runs.
WORKERS = {"Frontend": 1, "Processor": 2, "DecodeWorker": 2, "PrefillWorker": 1, "EncodeWorker": 2}
MAX_INFLIGHT = 48  # the graph's Frontend.max-inflight: room for a fault test's 32 requests
REQUEST_TIMEOUT_S = 90.0  # a request still open after this is lost (the graph's deadline is 600)
# A replacement worker imports torch and loads the model before it registers;
# on a loaded 2-core CI machine that alone can take most of a minute.
REPLACED_S = 150.0


def wait_until(what: str, probe: Callable[[], T | None], timeout_s: float) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            value = probe()
        except httpx.HTTPError:
            value = None
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:.0f} s")
        time.sleep(0.25)


class RestartableEtcd:
    """Our usual etcd, plus a crash-and-restart: SIGKILL, then the same command on the same data."""

    def __init__(self) -> None:
        self.server = EtcdServer()
        self.replacement: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return self.server.address

    def kill_and_restart(self) -> None:
        pid = self.replacement.pid if self.replacement else self.server.pid
        assert pid is not None
        command = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        self.replacement = subprocess.Popen(
            dies_with_parent(command), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        wait_until(
            "etcd answers after its restart",
            lambda: b"true" in httpx.get(f"http://{self.address}/health").content,
            30,
        )

    def __enter__(self) -> RestartableEtcd:
        self.server.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.replacement is not None:
            stop_process(self.replacement, grace_s=5)
        self.server.stop()


class ExtraFrontend:
    """A second frontend process beside the graph, with its own settings and log."""

    def __init__(self, process: subprocess.Popen[bytes], port: int, log_path: Path) -> None:
        self.process = process
        self.base_url = f"http://127.0.0.1:{port}"
        self.log_path = log_path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def instances(base_url: str) -> dict[str, list[dict[str, Any]]]:
    return httpx.get(f"{base_url}/health", timeout=10).json()["instances"]


def pids(base_url: str) -> dict[str, set[int]]:
    return {name: {i["pid"] for i in found} for name, found in instances(base_url).items()}


def wait_whole(graph: RunningGraph, component: str) -> None:
    """Faults hit a whole component: wait out the replacement of an earlier victim first.

    A killed worker stays listed until its lease lapses, so count only live processes:
    the component is whole when every listed instance is alive and there are enough.
    """

    def whole() -> bool:
        listed = pids(graph.base_url)[component]
        return len(listed) == WORKERS[component] and all(alive(pid) for pid in listed)

    wait_until(f"{WORKERS[component]} live {component} instances", whole, REPLACED_S)


def worker_stats(base_url: str, stat: str) -> dict[tuple[str, str], float]:
    """One stat of every worker that reports it, by (component, instance), from /metrics."""
    found = worker_stats_in(httpx.get(f"{base_url}/metrics", timeout=10).text).items()
    return {(c, i): v for (c, i, s), v in found if s == stat}


def frontend_metrics(base_url: str) -> str:
    return httpx.get(f"{base_url}/metrics", timeout=10).text


def frontend_in_flight(metrics: str) -> float:
    """Chat requests the frontend is serving, from one read of its /metrics."""
    pattern = r'^vidgraph:num_requests_running\{model_name="tiny"\} (\S+)$'
    return float(re.search(pattern, metrics, flags=re.M).group(1))


def frontend_finished(metrics: str) -> float:
    """Chat requests the frontend has answered so far, whatever their status."""
    return sum(map(float, re.findall(r"^vidgraph:requests_total{.*} (\S+)$", metrics, flags=re.M)))


def frontend_ready(base_url: str) -> bool:
    """The frontend has found an instance of every component (its /health says ready)."""
    return httpx.get(f"{base_url}/health", timeout=10).status_code == 200


def chat_body(media_dir: Path, index: int, *, max_tokens: int = 12) -> dict[str, Any]:
    """The index-th request of a mix that reaches every stage: videos, long text, streamed."""
    long_text = "Tell me about the river and the hills, in careful words. " * 8
    kinds = [
        ("What is in this video?", [media_dir / "v1.mp4"]),
        (long_text, []),
        ("Compare them.", [media_dir / "v1.mp4", media_dir / "v2.mp4"]),
        ("Say hi.", []),
    ]
    text, videos = kinds[index % len(kinds)]
    parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
    parts += [{"type": "video_url", "video_url": {"url": f"file://{v}"}} for v in videos]
    return {
        "model": "tiny",
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": max_tokens,
        "temperature": 0,
        # Every answer runs its full length, so requests stay in flight as long as planned.
        "ignore_eos": True,
        "stream": index % 2 == 0,
    }


async def send_all(
    base_url: str, bodies: list[dict[str, Any]], headers: dict[str, str] | None = None
) -> list[Outcome]:
    """Send every body at once; how each ended (answered, errored or lost)."""
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=None) as client:
        return list(await asyncio.gather(*(chat(client, b, REQUEST_TIMEOUT_S) for b in bodies)))


def tally(outcomes: list[Outcome]) -> dict[str, int]:
    return {k: sum(1 for o in outcomes if o.kind == k) for k in ("answered", "errored", "lost")}
