"""Soak: mixed load on one graph for a long while; nothing may leak, fail or slow down.

    python -m benchmarks.soak                       # 10 minutes, 6 concurrent clients
    python -m benchmarks.soak --duration-s 120 --concurrency 4

Serves `graphs.disagg`, then keeps `--concurrency` clients busy with a mix of
text-only, long-text (remote prefill), one- and two-video requests, streamed
and not, by file path and inline as `data:` URLs. Every request is classified
by `chat` below (answered, errored, or lost); every process of the graph is
sampled for RSS and open file descriptors. Writes
`benchmarks/results/soak.json` and prints a per-process start/end table and
the p99 latency of each minute. The exit status is 1 if any request failed.

`chat` and `Outcome` are also what the reliability tests classify requests with.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks.loadgen.stats import percentile
from graphs.serve import ROOT, RunningGraph, serve_graph
from media.samples import write_sample_video


@dataclass
class Outcome:
    """How one chat request ended, as its client saw it.

    `answered`: a whole answer (a finish reason, and `[DONE]` for a stream).
    `errored`: a clear error (an OpenAI error body, or an SSE error event).
    `lost`: anything else — a dropped connection, a hang past the client's
    timeout, a stream cut off without an error event. Lost must never happen.
    """

    status: int | None = None
    finish_reason: str | None = None
    error: str | None = None
    lost: str | None = None
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    latency_s: float = 0.0

    @property
    def kind(self) -> str:
        if self.lost is not None:
            return "lost"
        return "errored" if self.error is not None else "answered"


async def chat(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    timeout_s: float,
    outcome: Outcome | None = None,
) -> Outcome:
    """POST one chat completion (streamed if `body["stream"]`) and classify how it ended.

    A caller that passes its own `outcome` can watch a stream's tokens arrive
    (the migration benchmark kills a worker after so many).
    """
    started = time.perf_counter()
    outcome = outcome or Outcome()
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", "/v1/chat/completions", json=body) as response:
                outcome.status = response.status_code
                if response.status_code != 200 or not body.get("stream"):
                    _read_whole(outcome, json.loads(await response.aread()))
                else:
                    await _read_events(outcome, response)
    except TimeoutError:
        outcome.lost = f"no end within {timeout_s} s"
    except (httpx.HTTPError, json.JSONDecodeError) as error:
        outcome.lost = f"{type(error).__name__}: {error}"
    outcome.latency_s = time.perf_counter() - started
    return outcome


def stream_with_fault(
    base_url: str,
    body: dict[str, Any],
    timeout_s: float,
    fault: Callable[[], None] | None = None,
    when: Callable[[Outcome], bool] = lambda outcome: True,
) -> Outcome:
    """One chat from synchronous code; `fault` runs once `when(outcome)` holds mid-stream.

    The fault runs in a thread (it may block, e.g. to find its victim), so the stream
    goes on being read meanwhile, as a real client's would.
    """

    async def run() -> Outcome:
        outcome = Outcome()
        async with httpx.AsyncClient(base_url=base_url, timeout=timeout_s) as client:
            reading = asyncio.create_task(chat(client, body, timeout_s, outcome))
            if fault is not None:
                while not reading.done() and not when(outcome):
                    await asyncio.sleep(0.005)
                await asyncio.to_thread(fault)
            return await reading

    return asyncio.run(run())


def _read_whole(outcome: Outcome, body: dict[str, Any]) -> None:
    if "error" in body:
        outcome.error = body["error"]["message"]
    elif outcome.status == 200:
        outcome.finish_reason = body["choices"][0]["finish_reason"]
        outcome.text = body["choices"][0]["message"]["content"]
    else:
        outcome.lost = f"HTTP {outcome.status} without an OpenAI error body"


async def _read_events(outcome: Outcome, response: httpx.Response) -> None:
    done = False
    async for line in response.aiter_lines():
        if not line.startswith("data: "):
            continue
        data = line.removeprefix("data: ")
        if data == "[DONE]":
            done = True
            break
        event = json.loads(data)
        if "error" in event:
            outcome.error = event["error"]["message"]
            continue
        outcome.usage = event.get("usage") or outcome.usage
        for choice in event["choices"]:
            outcome.text += choice["delta"].get("content") or ""
            # Token ids are there when the body asks for `return_tokens_as_token_ids`.
            for entry in (choice.get("logprobs") or {}).get("content") or []:
                outcome.token_ids.append(int(entry["token"].removeprefix("token_id:")))
            outcome.finish_reason = choice.get("finish_reason") or outcome.finish_reason
    if not done or (outcome.finish_reason is None and outcome.error is None):
        outcome.lost = "the stream ended without a finish reason or an error event"


@dataclass(frozen=True)
class Usage:
    rss_mib: float
    fds: int


def process_usage(pid: int) -> Usage | None:
    """Resident memory and open file descriptors of a live process (None once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    rss_kib = next(int(line.split()[1]) for line in status.splitlines() if line[:6] == "VmRSS:")
    return Usage(rss_kib / 1024, fds)


def graph_processes(graph: RunningGraph) -> dict[str, int]:
    """Every process of a served graph by a readable name: supervisor, etcd, each worker."""
    names = {"supervisor": graph.process.pid}
    children = Path(f"/proc/{graph.process.pid}/task/{graph.process.pid}/children")
    for pid in map(int, children.read_text().split()):
        program = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        if program.endswith(b"/etcd"):
            names["etcd"] = pid
    instances = httpx.get(f"{graph.base_url}/health").json()["instances"]
    for component, found in instances.items():
        for index, instance in enumerate(sorted(found, key=lambda i: i["pid"])):
            names[f"{component}[{index}]"] = instance["pid"]
    return names


@dataclass
class Mix:
    """The request mix: each body built fresh, chosen round-robin over kinds."""

    video_paths: list[Path]
    rng: random.Random = field(default_factory=lambda: random.Random(0))

    def bodies(self) -> itertools.cycle[tuple[str, dict[str, Any]]]:
        inline = (
            "data:video/mp4;base64," + base64.b64encode(self.video_paths[0].read_bytes()).decode()
        )
        long_text = "Describe the river and the hills. " * 12
        first, second = (f"file://{p}" for p in self.video_paths[:2])
        kinds = {
            "text": ([], "Say something short."),
            "long text": ([], long_text),
            "one video": ([first], "What is in this video?"),
            "two videos": ([first, second], "Compare the two."),
            "inline video": ([inline], "What is in this video?"),
        }
        return itertools.cycle(
            (name, self.body(urls, text, stream))
            for name, (urls, text) in kinds.items()
            for stream in (True, False)
        )

    def body(self, urls: list[str], text: str, stream: bool) -> dict[str, Any]:
        parts: list[dict[str, Any]] = [{"type": "text", "text": text}]
        parts += [{"type": "video_url", "video_url": {"url": u}} for u in urls]
        return {
            "model": "tiny",
            "messages": [{"role": "user", "content": parts}],
            "max_tokens": self.rng.randint(4, 24),
            "temperature": 0,
            "stream": stream,
        }


async def soak(graph: RunningGraph, mix: Mix, duration_s: float, concurrency: int) -> dict:
    processes = graph_processes(graph)
    start_usage = {name: process_usage(pid) for name, pid in processes.items()}
    bodies = mix.bodies()
    outcomes: list[tuple[float, str, Outcome]] = []
    began = time.monotonic()

    async def client_loop(client: httpx.AsyncClient) -> None:
        while time.monotonic() - began < duration_s:
            kind, body = next(bodies)
            outcome = await chat(client, body, timeout_s=120)
            outcomes.append((time.monotonic() - began, kind, outcome))
            if outcome.kind != "answered":
                print(f"{kind}: {outcome.kind}: {outcome.error or outcome.lost}", flush=True)

    async with httpx.AsyncClient(base_url=graph.base_url, timeout=None) as client:
        await asyncio.gather(*(client_loop(client) for _ in range(concurrency)))
    end_usage = {name: process_usage(pid) for name, pid in processes.items()}
    return {
        "duration_s": duration_s,
        "concurrency": concurrency,
        "requests": len(outcomes),
        "by_kind": {
            k: sum(1 for _, _, o in outcomes if o.kind == k)
            for k in ("answered", "errored", "lost")
        },
        "p99_latency_ms_by_minute": _p99_by_minute(outcomes),
        "processes": {
            name: {
                "pid": pid,
                "rss_mib": [
                    _field(start_usage[name], "rss_mib"),
                    _field(end_usage[name], "rss_mib"),
                ],
                "fds": [_field(start_usage[name], "fds"), _field(end_usage[name], "fds")],
            }
            for name, pid in processes.items()
        },
    }


def _field(usage: Usage | None, name: str) -> float | None:
    return None if usage is None else round(getattr(usage, name), 1)


def _p99_by_minute(outcomes: list[tuple[float, str, Outcome]]) -> list[float]:
    minutes: dict[int, list[float]] = {}
    for at, _, outcome in outcomes:
        minutes.setdefault(int(at // 60), []).append(outcome.latency_s)
    return [round(1e3 * percentile(v, 99), 1) for _, v in sorted(minutes.items())]


def print_report(result: dict) -> None:
    print(f"\n{result['requests']} requests in {result['duration_s']:.0f} s: {result['by_kind']}")
    print(f"p99 latency by minute (ms): {result['p99_latency_ms_by_minute']}")
    print(f"\n{'process':18} {'RSS start':>10} {'RSS end':>10} {'fds start':>10} {'fds end':>8}")
    for name, p in result["processes"].items():
        (rss_start, rss_end), (fds_start, fds_end) = p["rss_mib"], p["fds"]
        print(f"{name:18} {rss_start!s:>10} {rss_end!s:>10} {fds_start!s:>10} {fds_end!s:>8}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration-s", type=float, default=600.0)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument(
        "--warmup-s", type=float, default=30.0, help="load before RSS is first read"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/soak.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        media = Path(folder)
        videos = [
            write_sample_video(
                media / f"v{seed}.mp4", seconds=1.5, fps=8, width=80, height=48, seed=seed
            )
            for seed in (1, 2)
        ]
        overrides = [f"--EncodeWorker.allowed-local-media-path={media}"]
        config = ROOT / "configs/disagg.yaml"
        with serve_graph(
            "graphs.disagg", config, *overrides, log_path=media / "serve.log"
        ) as graph:
            mix = Mix(videos)
            asyncio.run(soak(graph, mix, args.warmup_s, args.concurrency))
            result = asyncio.run(soak(graph, mix, args.duration_s, args.concurrency))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print_report(result)
    return 0 if result["by_kind"]["answered"] == result["requests"] else 1


if __name__ == "__main__":
    sys.exit(main())
