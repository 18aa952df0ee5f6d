"""Encode cache hit rate with 4 encode workers: 16 videos, each asked 4 times, in random order.

    python -m benchmarks.encode_cache [--concurrency 4] [--out benchmarks/results/encode_cache.json]

Runs the aggregated graph with four encode workers twice in one invocation: once
with the decode worker's `router: round-robin` (no media affinity: the baseline)
and once with `router: cache-aware` (the shipped configs: the media key decides
the encode worker, bounded by load). The same 64 asks, shuffled with a fixed
seed, go to both with the same concurrency. A hit is an ask whose embeddings
were not computed for it: an embedding-cache hit, or a wait on the same video
already being encoded (single-flight). Hit rate = 1 - encodes / asks; the best
possible is 1 - 16/64 = 75 %.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import httpx

from benchmarks.systems import component_stat
from graphs.serve import ROOT, serve_graph
from media.samples import write_sample_video

RESULTS = Path(__file__).parent / "results" / "encode_cache.json"
VIDEOS, ASKS, ENCODE_WORKERS = 16, 4, 4
STATS = ("media_encoded", "embedding_cache_hits", "media_shared_in_flight")


def encode_stats(base_url: str) -> dict[str, float]:
    metrics = httpx.get(f"{base_url}/metrics", timeout=30).text
    return {stat: sum(component_stat(metrics, "EncodeWorker", stat).values()) for stat in STATS}


async def ask_all(base_url: str, urls: list[str], concurrency: int) -> float:
    slots = asyncio.Semaphore(concurrency)

    async def ask(client: httpx.AsyncClient, url: str) -> None:
        body = {
            "model": "tiny",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What happens?"},
                        {"type": "video_url", "video_url": {"url": url}},
                    ],
                }
            ],
            "max_tokens": 1,
            "temperature": 0,
        }
        async with slots:
            response = await client.post("/v1/chat/completions", json=body)
            response.raise_for_status()

    began = time.perf_counter()
    async with httpx.AsyncClient(base_url=base_url, timeout=300) as client:
        await asyncio.gather(*(ask(client, url) for url in urls))
    return time.perf_counter() - began


def run(router: str, media: Path, urls: list[str], concurrency: int, logs: Path) -> dict[str, Any]:
    with serve_graph(
        "graphs.agg",
        ROOT / "configs" / "agg.yaml",
        f"--EncodeWorker.workers={ENCODE_WORKERS}",
        f"--EncodeWorker.allowed-local-media-path={media}",
        f"--DecodeWorker.router={router}",
        log_path=logs / f"{router}.log",
    ) as graph:
        before = encode_stats(graph.base_url)
        seconds = asyncio.run(ask_all(graph.base_url, urls, concurrency))
        after = encode_stats(graph.base_url)
    counts = {stat: after[stat] - before[stat] for stat in STATS}
    return {
        "router": router,
        "asks": len(urls),
        **counts,
        "hit_rate": round(1 - counts["media_encoded"] / len(urls), 3),
        "seconds": round(seconds, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    with TemporaryDirectory(prefix="vidgraph-encode-cache-") as folder:
        media = Path(folder)
        for seed in range(VIDEOS):
            write_sample_video(
                media / f"v{seed}.mp4", seconds=1.0, fps=8, width=64, height=48, seed=seed
            )
        urls = [f"file://{media}/v{seed}.mp4" for seed in range(VIDEOS) for _ in range(ASKS)]
        random.Random(args.seed).shuffle(urls)
        results = [
            run(router, media, urls, args.concurrency, media)
            for router in ("round-robin", "cache-aware")
        ]
    for result in results:
        print(
            f"{result['router']:12} hit rate {result['hit_rate']:.0%} "
            f"({result['media_encoded']:.0f} encodes for {result['asks']} asks; "
            f"{result['embedding_cache_hits']:.0f} cache hits, "
            f"{result['media_shared_in_flight']:.0f} shared in flight) in {result['seconds']} s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "command": "python -m benchmarks.encode_cache " + " ".join(sys.argv[1:]),
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m": os.getloadavg()[0],
        "parameters": {
            "videos": VIDEOS,
            "asks_per_video": ASKS,
            "encode_workers": ENCODE_WORKERS,
            "concurrency": args.concurrency,
            "shuffle_seed": args.seed,
        },
        "results": results,
    }
    args.out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
