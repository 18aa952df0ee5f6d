"""/v1/inference/upload against the service a team would write by hand: FastAPI + `generate()`.

One run: distinct 10-second videos uploaded at concurrency 1, 4 and 16, through
the agg graph (configs/agg-qwen3vl.yaml) and through a single-process baseline
(FastAPI, the same tiny Qwen3-VL checkpoint loaded once, frames sampled the
same qwen-vl-utils way, `generate()` per request), same prompt, same greedy
sampling and answer length, same machine. Every request sends a video of its
own (the sample generator with the request's index as seed), the same set to
both systems, so no answer comes from vidgraph's embedding cache: each one pays
the upload, probe, decode, vision encoder and generation. Both services are up
for the whole run and the levels interleave (vidgraph at 1, the baseline at 1,
vidgraph at 4, ...), so a change in the machine's load hits both alike.
Reports requests/s and latency p50/p99 per concurrency, and how many answers the
two systems agree on, and writes benchmarks/results/apps_inference.json.

    .venv/bin/python -m benchmarks.apps_inference
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from fastapi import File, Form, UploadFile

from benchmarks.provenance import finish, provenance
from graphs.serve import ROOT, free_port, serve_graph
from media import MediaOptions
from media.samples import write_sample_video

MODEL = "tiny-qwen3-vl"
PROMPT = "What happens in this video?"
MAX_TOKENS = 16
SAMPLING = MediaOptions(fps=2.0, min_pixels=4096, max_pixels=16384)
"""configs/agg-qwen3vl.yaml's EncodeWorker sampling, which the baseline copies."""
VIDEO = {"fps": 2.0, "max_frames": 768}
"""The inference routes' defaults, so both systems sample 20 frames of a 10-s video."""
CLIP = {"seconds": 10.0, "fps": 10, "width": 96, "height": 64}
RESULTS = ROOT / "benchmarks" / "results" / "apps_inference.json"


def baseline_app(model_dir: str):  # type: ignore[no-untyped-def]
    """The hand-written service: one process, the model loaded once, `generate()` per request."""
    import torch
    from fastapi import FastAPI
    from transformers import AutoProcessor, Qwen3VLForConditionalGeneration
    from transformers.video_utils import VideoMetadata

    from media import decode_video_sync

    processor = AutoProcessor.from_pretrained(model_dir)
    model = Qwen3VLForConditionalGeneration.from_pretrained(model_dir).eval()
    sampling = SAMPLING.video_sampling(VIDEO, "qwen-vl")
    app = FastAPI()

    @app.post("/infer")
    def infer(video: UploadFile = File(...), prompt: str = Form(...)) -> dict:  # noqa: B008
        decoded = decode_video_sync(video.file.read(), sampling)
        content = [{"type": "video"}, {"type": "text", "text": prompt}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
        )
        metadata = VideoMetadata(
            total_num_frames=len(decoded.frames),
            fps=decoded.source_fps,
            frames_indices=decoded.frame_indices,
        )
        inputs = processor(
            text=[text],
            videos=[decoded.frames],
            video_metadata=[metadata],
            do_sample_frames=False,
            return_tensors="pt",
        )
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        answer = out[0, inputs["input_ids"].shape[1] :]
        return {"text": processor.decode(answer, skip_special_tokens=True)}

    return app


async def load(
    url: str, fields: dict[str, str], videos: dict[int, bytes], concurrency: int
) -> tuple[dict, dict[int, str]]:
    """Every video in `videos` once, `concurrency` at a time: the level's numbers and answers."""
    latencies: list[float] = []
    answers: dict[int, str] = {}
    errors = 0
    queue = sorted(videos, reverse=True)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            index = queue.pop()
            started = time.perf_counter()
            answer = await client.post(url, files=upload_file(videos[index]), data=fields)
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - started)
                answers[index] = answer.json()["text"]
            else:
                errors += 1

    async with httpx.AsyncClient(timeout=600) as client:
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - began
    latencies.sort()
    level = {
        "concurrency": concurrency,
        "requests": len(videos),
        "errors": errors,
        "requests_per_s": len(latencies) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
    }
    return level, answers


def upload_file(video: bytes) -> dict[str, tuple[str, bytes, str]]:
    return {"video": ("clip.mp4", video, "video/mp4")}


def write_clips(folder: Path, count: int) -> dict[int, bytes]:
    """`count` distinct 10-second videos, the same bytes every run (seed = index)."""
    return {
        index: write_sample_video(folder / f"clip-{index}.mp4", seed=index, **CLIP).read_bytes()
        for index in range(count)
    }


@contextmanager
def baseline_service(model_dir: str) -> Iterator[str]:
    """The baseline in a process of its own, as a team would deploy it: its `/infer` URL."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.apps_inference", "--baseline", str(port), model_dir],
        cwd=ROOT,
    )
    try:
        wait_up(f"http://127.0.0.1:{port}/docs")
        yield f"http://127.0.0.1:{port}/infer"
    finally:
        server.terminate()
        server.wait(30)


def run(concurrencies: list[int], per_level: int) -> tuple[dict, dict]:
    """Both systems over the same videos, levels interleaved; the results and the agreement."""
    from engine import resolve_model

    model_dir = resolve_model(MODEL)
    work = Path(tempfile.mkdtemp(prefix="apps-bench-"))
    clips = write_clips(work, 1 + per_level * len(concurrencies))
    warmup = {0: clips[0]}  # loads what loads lazily; seen by no measured request
    systems = {
        "vidgraph-agg": {"prompt": PROMPT, "max_tokens": str(MAX_TOKENS), "temperature": "0"},
        "fastapi-generate": {"prompt": PROMPT},
    }
    results: dict[str, list[dict]] = {name: [] for name in systems}
    answers: dict[str, dict[int, str]] = {name: {} for name in systems}
    with (
        serve_graph(
            "graphs.agg",
            ROOT / "configs" / "agg-qwen3vl.yaml",
            f"--Frontend.upload-dir={work / 'uploads'}",
            f"--EncodeWorker.upload-dir={work / 'uploads'}",
            log_path=work / "graph.log",
        ) as graph,
        baseline_service(model_dir) as baseline,
    ):
        urls = {
            "vidgraph-agg": f"{graph.base_url}/v1/inference/upload",
            "fastapi-generate": baseline,
        }
        for name, url in urls.items():
            asyncio.run(load(url, systems[name], warmup, 1))
        for number, concurrency in enumerate(concurrencies):
            first = 1 + number * per_level
            videos = {i: clips[i] for i in range(first, first + per_level)}
            for name, url in urls.items():
                level, texts = asyncio.run(load(url, systems[name], videos, concurrency))
                results[name].append(level)
                answers[name].update(texts)
                print(name, level, flush=True)
    both = answers["vidgraph-agg"].keys() & answers["fastapi-generate"].keys()
    agreement = {
        "answered_by_both": len(both),
        "same_text": sum(
            answers["vidgraph-agg"][i] == answers["fastapi-generate"][i] for i in both
        ),
    }
    return results, agreement


def wait_up(url: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument(
        "--requests", type=int, default=32, help="requests (distinct videos) per concurrency level"
    )
    parser.add_argument(
        "--baseline", nargs=2, metavar=("PORT", "MODEL_DIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.baseline:
        import uvicorn

        port, model_dir = args.baseline
        uvicorn.run(baseline_app(model_dir), host="127.0.0.1", port=int(port), log_level="warning")
        return
    started = time.time()
    record = provenance(ROOT, cpus=os.sched_getaffinity(0))
    record["workload"] = {
        "model": MODEL,
        "videos": (
            "a distinct one per request (media.samples, seed = index; the same set to both "
            "systems): 10 s, 96x64, 10 fps, sampled at 2 fps (20 frames); none repeats, so "
            "vidgraph's embedding cache never answers"
        ),
        "prompt": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "order": "both services up throughout; levels interleaved, vidgraph first at each",
    }
    record["results"], record["agreement"] = run(args.concurrency, args.requests)
    RESULTS.write_text(json.dumps(finish(record, started), indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
