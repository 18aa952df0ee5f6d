"""Migration under load: kill -9 a decode worker while streams run; none may fail or change.

    python -m benchmarks.migration                     # 32 streams, 3 kills
    python -m benchmarks.migration --streams 16 --repeats 1

Serves `graphs.disagg` (`configs/disagg.yaml`) with `--decode-workers` decode
workers and sends `--streams` concurrent greedy streams (distinct prompts over
four videos), first undisturbed: their token ids are the reference. Then, per
repeat, the same streams again, and once a random share (10-70 %) of all their
tokens has streamed, SIGKILL of a decode worker picked at random.
Each stream must end whole, with no error event, and with the reference's token
ids and usage; the processors' `migrations` counter says how many moved.
Writes `benchmarks/results/migration.json`; exit status 1 on any miss.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.provenance import finish, provenance
from benchmarks.soak import Outcome, chat
from benchmarks.systems import component_stat
from graphs.serve import ROOT, RunningGraph, serve_graph
from media.samples import write_sample_video
from runtime.processes import alive

RESULTS = ROOT / "benchmarks" / "results" / "migration.json"
CONFIG = ROOT / "configs" / "disagg.yaml"
VIDEOS = 4
STREAM_TIMEOUT_S = 600.0
MIGRATIONS = ("Processor", "migrations")


def bodies(media: Path, streams: int, max_tokens: int) -> list[dict[str, Any]]:
    return [
        {
            "model": "tiny",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "video_url",
                            "video_url": {"url": f"file://{media}/v{i % VIDEOS}.mp4"},
                        },
                        {"type": "text", "text": f"Story {i}: what happens next?"},
                    ],
                }
            ],
            "max_tokens": max_tokens,
            "temperature": 0,
            "ignore_eos": True,
            "stream": True,
            "logprobs": True,
            "return_tokens_as_token_ids": True,
            "stream_options": {"include_usage": True},
        }
        for i in range(streams)
    ]


def decode_workers(base_url: str) -> dict[str, int]:
    """Live decode workers' pids by instance id (a killed one stays listed until its lease ends)."""
    listed = httpx.get(f"{base_url}/health", timeout=10).json()["instances"].get("DecodeWorker", [])
    return {i["id"]: i["pid"] for i in listed if alive(i["pid"])}


def migrations(base_url: str) -> float:
    """Streams the Processors have moved to another decode worker, since they started."""
    metrics = httpx.get(f"{base_url}/metrics", timeout=10).text
    return sum(component_stat(metrics, *MIGRATIONS).values())


async def whole(base_url: str, count: int, timeout_s: float = 300.0) -> float:
    """Seconds until `count` live decode workers are listed."""
    began = time.monotonic()
    while len(await asyncio.to_thread(decode_workers, base_url)) < count:
        if time.monotonic() - began > timeout_s:
            raise TimeoutError(f"fewer than {count} live decode workers after {timeout_s} s")
        await asyncio.sleep(0.2)
    return time.monotonic() - began


async def run(
    graph: RunningGraph,
    requests: list[dict[str, Any]],
    rng: random.Random,
    kill_after: int | None = None,
) -> tuple[list[Outcome], dict[str, Any]]:
    """All streams at once; with `kill_after`, SIGKILL a decode worker after so many tokens."""
    streams = [Outcome() for _ in requests]
    fault: dict[str, Any] = {}
    async with httpx.AsyncClient(base_url=graph.base_url, timeout=STREAM_TIMEOUT_S) as client:
        tasks = [
            asyncio.create_task(chat(client, b, STREAM_TIMEOUT_S, s))
            for b, s in zip(requests, streams, strict=True)
        ]
        if kill_after is not None:
            # Chosen up front: reading /metrics under this load takes seconds of streaming.
            victim = rng.choice(sorted(decode_workers(graph.base_url).values()))
            while sum(len(s.token_ids) for s in streams) < kill_after:
                await asyncio.sleep(0.005)
            os.kill(victim, signal.SIGKILL)
            fault = {
                "after_tokens": sum(len(s.token_ids) for s in streams),
                "killed_at": time.monotonic(),
            }
        await asyncio.gather(*tasks)
    return streams, fault


async def measure(args: argparse.Namespace, graph: RunningGraph, media: Path) -> dict[str, Any]:
    requests = bodies(media, args.streams, args.max_tokens)
    rng = random.Random(args.seed)
    await whole(graph.base_url, args.decode_workers)
    reference, _ = await run(graph, requests, rng)
    broken = [s for s in reference if s.kind != "answered"]
    if broken:
        raise RuntimeError(f"{len(broken)} undisturbed streams failed: {problems(broken)}")
    if len({tuple(s.token_ids) for s in reference}) < 2:
        raise RuntimeError("every stream gave the same tokens: the comparison would be vacuous")
    # The control: the same streams undisturbed again. Whatever differs here is not
    # migration's doing (a batch of another shape can flip a near-tie argmax).
    again, _ = await run(graph, requests, rng)
    control = differing(again, reference)
    total = args.streams * args.max_tokens
    rows = []
    for repeat in range(args.repeats):
        await whole(graph.base_url, args.decode_workers)
        moved = migrations(graph.base_url)
        began = time.monotonic()
        streams, fault = await run(
            graph, requests, rng, kill_after=int(total * rng.uniform(0.1, 0.7))
        )
        ended = time.monotonic()
        recovered = await whole(graph.base_url, args.decode_workers)
        rows.append(
            {
                "repeat": repeat,
                "killed_after_tokens": fault["after_tokens"],
                "migrations": migrations(graph.base_url) - moved,
                "client_errors": sum(s.kind != "answered" for s in streams),
                "streams_differing": differing(streams, reference),
                "errors": problems(streams)[:5],
                "all_streams_s": ended - began,
                "worker_replaced_s": ended - fault["killed_at"] + recovered,
            }
        )
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {
        "streams": args.streams,
        "max_tokens": args.max_tokens,
        "undisturbed_rerun_differing": control,
        "runs": rows,
    }


def problems(streams: list[Outcome]) -> list[str]:
    """What went wrong with each stream that did not end in a whole answer."""
    return [s.error or s.lost or "" for s in streams if s.kind != "answered"]


def differing(streams: list[Outcome], reference: list[Outcome]) -> list[dict[str, Any]]:
    """The streams whose token ids or usage differ from the reference's, and where."""
    found = []
    for index, (got, want) in enumerate(zip(streams, reference, strict=True)):
        if got.token_ids != want.token_ids or got.usage != want.usage:
            pairs = zip(got.token_ids, want.token_ids, strict=False)
            first = next((i for i, (a, b) in enumerate(pairs) if a != b), None)
            found.append(
                {
                    "stream": index,
                    "first_different_token": first,
                    "tokens": [len(got.token_ids), len(want.token_ids)],
                    "usage": [got.usage, want.usage],
                }
            )
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=1024)
    parser.add_argument("--decode-workers", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    started = time.time()
    record = provenance(ROOT, os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as folder:
        media = Path(folder)
        for seed in range(VIDEOS):
            write_sample_video(
                media / f"v{seed}.mp4", seconds=1.5, fps=8, width=80, height=48, seed=seed
            )
        with serve_graph(
            "graphs.disagg",
            CONFIG,
            f"--EncodeWorker.allowed-local-media-path={media}",
            f"--DecodeWorker.workers={args.decode_workers}",
            log_path=media / "serve.log",
        ) as graph:
            result = asyncio.run(measure(args, graph, media))
    record = {**finish(record, started), **result}
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    misses = sum(r["client_errors"] + len(r["streams_differing"]) for r in record["runs"])
    print(json.dumps(record["runs"], indent=2))
    return 1 if misses else 0


if __name__ == "__main__":
    sys.exit(main())
