"""/v1/frames/descriptions: 64 frames in one request (1 and 2 encode workers) vs one at a time.

One run on the agg graph with the tiny LLaVA-NeXT v1.6 image model
(configs/agg-llava-next.yaml, the RunPod worker's default): 64 distinct frames
described in one request, with one encode worker and with two, against the
serverless pattern of one request per frame, sent one after another. Reports
frames/s and writes benchmarks/results/apps_frames.json.

    .venv/bin/python -m benchmarks.apps_frames
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.provenance import finish, provenance
from graphs.serve import ROOT, serve_graph
from media import png
from media.samples import sample_frames

FRAMES = 64
MAX_TOKENS = 16
CONFIG = "agg-llava-next.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "apps_frames.json"


def frame_urls(count: int, first_seed: int) -> list[str]:
    """`count` distinct frames; different seeds never share an embedding-cache entry."""
    return [
        "data:image/png;base64,"
        + base64.b64encode(png(sample_frames(1, 96, 64, seed=first_seed + i)[0])).decode()
        for i in range(count)
    ]


def describe(base_url: str, urls: list[str]) -> dict:
    answer = httpx.post(
        f"{base_url}/v1/frames/descriptions",
        json={"frame_urls": urls, "max_tokens": MAX_TOKENS},
        timeout=1800,
    )
    answer.raise_for_status()
    return answer.json()


def run_graph(encode_workers: int, work: Path) -> dict:
    urls = frame_urls(FRAMES, first_seed=1000)
    with serve_graph(
        "graphs.agg",
        ROOT / "configs" / CONFIG,
        f"--EncodeWorker.ServiceArgs={{workers: {encode_workers}}}",
        log_path=work / f"graph-{encode_workers}.log",
    ) as graph:
        describe(graph.base_url, frame_urls(2, first_seed=900))  # warm-up, on other frames
        began = time.perf_counter()
        batched = describe(graph.base_url, urls)
        batched_s = time.perf_counter() - began
        assert batched["count"] == FRAMES, batched["failed_indices"]
        result = {
            "encode_workers": encode_workers,
            "one_request_frames_per_s": FRAMES / batched_s,
            "one_request_s": batched_s,
        }
        if encode_workers == 1:
            fresh = frame_urls(FRAMES, first_seed=2000)  # not in the embedding cache
            began = time.perf_counter()
            for url in fresh:
                assert describe(graph.base_url, [url])["count"] == 1
            serial_s = time.perf_counter() - began
            result |= {"one_at_a_time_frames_per_s": FRAMES / serial_s, "one_at_a_time_s": serial_s}
    print(result, flush=True)
    return result


def main() -> None:
    started = time.time()
    record = provenance(ROOT, cpus=os.sched_getaffinity(0))
    record["workload"] = {
        "config": CONFIG,
        "frames": FRAMES,
        "size": "96x64 PNG",
        "max_tokens": MAX_TOKENS,
    }
    work = Path(tempfile.mkdtemp(prefix="frames-bench-"))
    record["results"] = [run_graph(1, work), run_graph(2, work)]
    serial = record["results"][0]["one_at_a_time_frames_per_s"]
    for result in record["results"]:
        result["speedup_vs_one_at_a_time"] = result["one_request_frames_per_s"] / serial
    RESULTS.write_text(json.dumps(finish(record, started), indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
