"""Qwen3-VL, LLaVA-NeXT and LLaVA-NeXT-Video on their tiny checkpoints: TTFT and throughput
through the agg and disagg graphs, and encode time per frame against `transformers`' own
vision forward.

    .venv/bin/python -m benchmarks.families [--requests 12] [--concurrency 4]

Every request carries one medium (a video for Qwen3-VL and LLaVA-NeXT-Video, an image
for LLaVA-NeXT),
new bytes each time so the embedding cache never answers, and asks for a fixed
32 tokens (ignore_eos). The encode comparison runs in this process on the same
frames: our family's `encode` (what an encode worker runs: processor, tower,
projector, DeepStack) vs the HF model's `get_video_features`/`get_image_features`
after the same processor. Results: benchmarks/results/families.{json,md}.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import torch
from PIL import Image

from engine import resolve_model
from engine.models import family_for
from graphs.serve import ROOT, serve_graph
from media import MediaOptions, decode_video_sync
from media.samples import write_sample_video

RESULTS = ROOT / "benchmarks" / "results"
FAMILIES = {  # model, config (per graph), medium
    "qwen3-vl": ("tiny-qwen3-vl", "{graph}-qwen3vl", "video"),
    "llava-next": ("tiny-llava-next", "{graph}-llava-next", "image"),
    "llava-next-video": ("tiny", "{graph}", "video"),
}
MAX_TOKENS = 32


def media_url(kind: str, seed: int, scratch: Path) -> str:
    if kind == "video":
        path = write_sample_video(scratch / f"v{seed}.mp4", seconds=2.0, fps=10, seed=seed)
        return "data:video/mp4;base64," + base64.b64encode(path.read_bytes()).decode()
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


async def one_request(client: httpx.AsyncClient, model: str, kind: str, url: str) -> dict:
    part = {"type": f"{kind}_url", f"{kind}_url": {"url": url}}
    body = {
        "model": model,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Describe."}, part]}],
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    start = time.perf_counter()
    first = None
    chunks = 0
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                if first is None:
                    first = time.perf_counter()
                chunks += 1
    end = time.perf_counter()
    return {"ttft_s": (first or end) - start, "latency_s": end - start}


async def load(base_url: str, model: str, kind: str, urls: list[str], concurrency: int) -> dict:
    gate = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base_url, timeout=600) as client:
        await one_request(client, model, kind, urls[0])  # warm-up, not measured

        async def bounded(url: str) -> dict:
            async with gate:
                return await one_request(client, model, kind, url)

        start = time.perf_counter()
        records = await asyncio.gather(*(bounded(u) for u in urls[1:]))
        wall = time.perf_counter() - start
    ttfts = sorted(r["ttft_s"] for r in records)
    return {
        "requests": len(records),
        "concurrency": concurrency,
        "ttft_p50_ms": 1000 * statistics.median(ttfts),
        "ttft_p90_ms": 1000 * ttfts[int(0.9 * (len(ttfts) - 1))],
        "output_tokens_per_s": len(records) * MAX_TOKENS / wall,
    }


@torch.inference_mode()
def encode_per_frame(
    family: str, name: str, kind: str, scratch: Path, repeats: int = 5, rounds: int = 3
) -> dict:
    """Milliseconds per frame: our family's encode vs HF's vision forward, same frames.

    Runs after the graphs, whose workers have exited, so nothing of ours competes.
    """
    from transformers import AutoModelForImageTextToText
    from transformers.video_utils import VideoMetadata

    path = resolve_model(name)
    ours = family_for(path).load(path, torch.device("cpu"), torch.float32)
    hf = AutoModelForImageTextToText.from_pretrained(path).eval()
    if family == "llava-next-video":
        clip = write_sample_video(scratch / "encode.mp4", seconds=4.0, fps=10, seed=99)
        sampling = MediaOptions(num_frames=8).video_sampling(None)  # configs/agg.yaml's
        frames = decode_video_sync(clip.read_bytes(), sampling).frames

        def run_ours() -> None:
            ours.encode(frames, "video")

        def run_hf() -> None:
            out = ours.processor.video_processor(videos=[frames], return_tensors="pt")
            hf.model.get_video_features(out["pixel_values_videos"])
    elif kind == "video":
        clip = write_sample_video(scratch / "encode.mp4", seconds=4.0, fps=10, seed=99)
        sampling = MediaOptions(fps=2.0, min_pixels=4096, max_pixels=16384)
        decoded = decode_video_sync(clip.read_bytes(), sampling.video_sampling(None, "qwen-vl"))
        frames = decoded.frames
        times = [i / decoded.source_fps for i in decoded.frame_indices]
        metadata = VideoMetadata(
            total_num_frames=len(frames),
            fps=decoded.source_fps,
            frames_indices=decoded.frame_indices,
        )

        def run_ours() -> None:
            ours.encode(frames, "video", times)

        def run_hf() -> None:
            out = ours.processor.video_processor(
                videos=[frames],
                video_metadata=[metadata],
                do_sample_frames=False,
                return_tensors="pt",
            )
            hf.model.get_video_features(out["pixel_values_videos"], out["video_grid_thw"])
    else:
        frames = np.random.default_rng(5).integers(0, 256, (1, 96, 128, 3), dtype=np.uint8)

        def run_ours() -> None:
            ours.encode(frames, "image")

        def run_hf() -> None:
            out = ours.processor.image_processor(images=[frames[0]], return_tensors="pt")
            hf.model.get_image_features(out["pixel_values"], out["image_sizes"])

    # One thread, as an encode worker runs (cpu-threads: 1); the two alternate over
    # rounds and each keeps its best round, so load from elsewhere favours neither.
    torch.set_num_threads(1)
    best = {"vidgraph_encode": float("inf"), "transformers_vision": float("inf")}
    run_ours(), run_hf()  # warm-up
    for _ in range(rounds):
        for label, run in (("vidgraph_encode", run_ours), ("transformers_vision", run_hf)):
            start = time.perf_counter()
            for _ in range(repeats):
                run()
            best[label] = min(best[label], (time.perf_counter() - start) / repeats)
    timings = {f"{label}_ms_per_frame": 1000 * s / len(frames) for label, s in best.items()}
    return {"frames": len(frames), **timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=12)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    os.environ.setdefault("VIDGRAPH_CACHE", str(ROOT / ".cache"))
    results: dict = {"machine": f"{os.cpu_count()} CPUs", "max_tokens": MAX_TOKENS}
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        for family, (model, config, kind) in FAMILIES.items():
            resolve_model(model)
            urls = [media_url(kind, seed, scratch) for seed in range(args.requests + 1)]
            entry = {}
            for graph in ("agg", "disagg"):
                with serve_graph(
                    f"graphs.{graph}",
                    ROOT / "configs" / f"{config.format(graph=graph)}.yaml",
                    log_path=scratch / f"{family}-{graph}.log",
                ) as running:
                    entry[graph] = asyncio.run(
                        load(running.base_url, model, kind, urls, args.concurrency)
                    )
            entry["encode"] = encode_per_frame(family, model, kind, scratch)
            results[family] = entry
            print(family, json.dumps(entry, indent=1))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "families.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "families.md").write_text(markdown(results))


def markdown(results: dict) -> str:
    lines = [
        f"# Families on their tiny checkpoints ({results['machine']}, one run)",
        "",
        "| family | graph | TTFT p50 ms | TTFT p90 ms | output tok/s |",
        "|---|---|---|---|---|",
    ]
    for family in FAMILIES:
        for graph in ("agg", "disagg"):
            r = results[family][graph]
            lines.append(
                f"| {family} | {graph} | {r['ttft_p50_ms']:.0f} | {r['ttft_p90_ms']:.0f} | "
                f"{r['output_tokens_per_s']:.1f} |"
            )
    lines += ["", "| family | frames | vidgraph encode ms/frame | transformers vision ms/frame |"]
    lines += ["|---|---|---|---|"]
    for family in FAMILIES:
        e = results[family]["encode"]
        lines.append(
            f"| {family} | {e['frames']} | {e['vidgraph_encode_ms_per_frame']:.2f} | "
            f"{e['transformers_vision_ms_per_frame']:.2f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
