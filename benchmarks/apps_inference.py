"""/v1/inference/upload against the service a team would write by hand: FastAPI + `generate()`.

One run: 10-second videos uploaded at concurrency 1, 4 and 16, through the
agg graph and through a single-process baseline (FastAPI, the same tiny
checkpoint loaded once, frames sampled the same way, `generate()` per
request), same prompt, same greedy sampling and answer length, same machine.
Reports requests/s and latency p50/p99 per concurrency and writes
benchmarks/results/apps_inference.json. Every request sends the same video, so
vidgraph answers from its embedding cache after the first: this measures the
serving path (upload, probe, graph, generation), not the vision encoder.

    /work/tools/heavy .venv/bin/python -m benchmarks.apps_inference
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
from pathlib import Path

import httpx
from fastapi import File, Form, UploadFile

from benchmarks.provenance import finish, provenance
from graphs.serve import ROOT, free_port, serve_graph
from media.samples import write_sample_video

PROMPT = "What happens in this video?"
MAX_TOKENS = 16
FPS = 2.0
RESULTS = ROOT / "benchmarks" / "results" / "apps_inference.json"


def baseline_app(model_dir: str):  # type: ignore[no-untyped-def]
    """The hand-written service: one process, the model loaded once, `generate()` per request."""
    import torch
    from fastapi import FastAPI
    from transformers import AutoProcessor, LlavaNextVideoForConditionalGeneration

    from media import MediaOptions, decode_video_sync

    processor = AutoProcessor.from_pretrained(model_dir)
    model = LlavaNextVideoForConditionalGeneration.from_pretrained(model_dir).eval()
    sampling = MediaOptions(fps=FPS).video_sampling(None)
    app = FastAPI()

    @app.post("/infer")
    def infer(video: UploadFile = File(...), prompt: str = Form(...)) -> dict:  # noqa: B008
        frames = decode_video_sync(video.file.read(), sampling).frames
        content = [{"type": "video"}, {"type": "text", "text": prompt}]
        text = processor.apply_chat_template(
            [{"role": "user", "content": content}], add_generation_prompt=True
        )
        inputs = processor(text=text, videos=[frames], return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=MAX_TOKENS, do_sample=False)
        return {"text": processor.decode(out[0, inputs["input_ids"].shape[1] :])}

    return app


async def load(
    url: str, fields: dict[str, str], video: bytes, concurrency: int, total: int
) -> dict:
    latencies: list[float] = []
    errors = 0
    queue = list(range(total))

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            queue.pop()
            started = time.perf_counter()
            answer = await client.post(
                url, files={"video": ("clip.mp4", video, "video/mp4")}, data=fields
            )
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    async with httpx.AsyncClient(timeout=600) as client:
        await worker_warmup(client, url, fields, video)
        began = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - began
    latencies.sort()
    return {
        "concurrency": concurrency,
        "requests": total,
        "errors": errors,
        "requests_per_s": len(latencies) / wall,
        "p50_s": statistics.median(latencies),
        "p99_s": latencies[min(len(latencies) - 1, round(0.99 * (len(latencies) - 1)))],
    }


async def worker_warmup(client: httpx.AsyncClient, url: str, fields: dict, video: bytes) -> None:
    answer = await client.post(url, files={"video": ("clip.mp4", video, "video/mp4")}, data=fields)
    answer.raise_for_status()


def run(concurrencies: list[int], per_level: int) -> dict:
    from engine import resolve_model

    model_dir = resolve_model("tiny")
    work = Path(tempfile.mkdtemp(prefix="apps-bench-"))
    video = write_sample_video(
        work / "ten.mp4", seconds=10, fps=10, width=96, height=64
    ).read_bytes()
    results: dict[str, list[dict]] = {"vidgraph-agg": [], "fastapi-generate": []}
    graph_fields = {"prompt": PROMPT, "max_tokens": str(MAX_TOKENS), "temperature": "0"}
    with serve_graph(
        "graphs.agg",
        ROOT / "configs" / "agg.yaml",
        f"--Frontend.upload-dir={work / 'uploads'}",
        f"--EncodeWorker.upload-dir={work / 'uploads'}",
        log_path=work / "graph.log",
    ) as graph:
        for c in concurrencies:
            level = asyncio.run(
                load(f"{graph.base_url}/v1/inference/upload", graph_fields, video, c, per_level)
            )
            results["vidgraph-agg"].append(level)
            print("vidgraph-agg", level, flush=True)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.apps_inference", "--baseline", str(port), model_dir],
        cwd=ROOT,
    )
    try:
        wait_up(f"http://127.0.0.1:{port}/docs")
        for c in concurrencies:
            level = asyncio.run(
                load(f"http://127.0.0.1:{port}/infer", {"prompt": PROMPT}, video, c, per_level)
            )
            results["fastapi-generate"].append(level)
            print("fastapi-generate", level, flush=True)
    finally:
        server.terminate()
        server.wait(30)
    return results


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
    parser.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
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
        "video": "10 s, 96x64, 10 fps (sampled at 2 fps: 20 frames)",
        "prompt": PROMPT,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    record["results"] = run(args.concurrency, args.requests)
    RESULTS.write_text(json.dumps(finish(record, started), indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
