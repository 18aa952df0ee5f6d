"""Video generation through the graph, next to `WanPipeline` called in-process.

    python -m benchmarks.videogen [--repeats 15] [--jobs 12] [--steps 20]

One invocation, the same tiny Wan, the same job (64x64, 17 frames, `--steps`
denoising steps, chosen so one job takes over a second on one core):

- seconds per job: `/v1/videos/generations` on a graph with one worker,
  interleaved with `WanPipeline` + the same MP4 encode in this process (on
  one thread, as a worker runs it), `--repeats` each (the same call varies by
  ~15 % between repeats on a shared 2-core host: a few repeats decide nothing);
- jobs per minute at concurrency 4 through `POST /v1/videos` + polling, with
  one worker and then with two.

Writes benchmarks/results/videogen.json with the commit, date, machine load
and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from graphs.serve import ROOT, serve_graph

RESULTS = Path(__file__).parent / "results" / "videogen.json"
MODEL = "tiny-wan"


def job(steps: int, seed: int) -> dict[str, Any]:
    return {
        "prompt": "a red car drives down a rainy street at night",
        "model": MODEL,
        "size": "64x64",
        "num_frames": 17,
        "num_inference_steps": steps,
        "seed": seed,
    }


def in_process(steps: int) -> Any:
    """`WanPipeline` plus the worker's MP4 encode, in this process on one thread."""
    import torch
    from diffusers import WanPipeline

    from engine import resolve_model
    from videogen.mp4 import encode_mp4, to_uint8

    torch.set_num_threads(1)
    pipe = WanPipeline.from_pretrained(resolve_model(MODEL), dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)

    def run(seed: int) -> float:
        started = time.perf_counter()
        body = job(steps, seed)
        frames = pipe(
            prompt=body["prompt"],
            height=64,
            width=64,
            num_frames=17,
            num_inference_steps=steps,
            guidance_scale=5.0,
            generator=torch.Generator("cpu").manual_seed(seed),
            output_type="np",
        ).frames[0]
        encode_mp4(to_uint8(frames), fps=16)
        return time.perf_counter() - started

    return run


def through_graph(base_url: str, steps: int, seed: int) -> float:
    started = time.perf_counter()
    answer = httpx.post(f"{base_url}/v1/videos/generations", json=job(steps, seed), timeout=600)
    answer.raise_for_status()
    return time.perf_counter() - started


def jobs_per_minute(base_url: str, steps: int, jobs: int, concurrency: int) -> float:
    """Jobs submitted with POST /v1/videos and polled, `concurrency` at a time."""

    def one(seed: int) -> None:
        with httpx.Client(base_url=base_url, timeout=600) as http:
            created = http.post("/v1/videos", json=job(steps, seed))
            created.raise_for_status()
            video_id = created.json()["id"]
            while (status := http.get(f"/v1/videos/{video_id}").json()["status"]) not in (
                "completed",
                "failed",
            ):
                time.sleep(0.05)
            assert status == "completed", status

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, range(jobs)))
    return 60 * jobs / (time.perf_counter() - started)


def graph(workers: int, steps: int, store: Path, log: Path) -> Any:
    """The shipped videogen config, with room for this run's steps and jobs."""
    return serve_graph(
        "graphs.videogen",
        ROOT / "configs" / "videogen.yaml",
        f"--VideoGenerationWorker.workers={workers}",
        f"--VideoGenerationWorker.storage-url={store}",
        "--VideoGenerationWorker.max-queue=64",
        f"--VideoGenerationWorker.max-steps={steps}",
        log_path=log,
    )


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=12)
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="bench-videogen-"))
    run_here = in_process(args.steps)
    run_here(0)  # warm-up, as the worker's first job is below
    seconds: dict[str, list[float]] = {"graph": [], "in_process": []}
    throughput: dict[str, float] = {}
    with graph(1, args.steps, work / "videos", work / "serve-1.log") as one:
        through_graph(one.base_url, args.steps, 0)
        for repeat in range(args.repeats):
            seconds["graph"].append(through_graph(one.base_url, args.steps, repeat + 1))
            seconds["in_process"].append(run_here(repeat + 1))
        throughput["1_worker"] = jobs_per_minute(one.base_url, args.steps, args.jobs, 4)
    with graph(2, args.steps, work / "videos", work / "serve-2.log") as two:
        through_graph(two.base_url, args.steps, 0)
        throughput["2_workers"] = jobs_per_minute(two.base_url, args.steps, args.jobs, 4)
    median = {k: statistics.median(v) for k, v in seconds.items()}
    result = {
        "benchmark": "videogen",
        "command": " ".join(
            [Path(sys.executable).name, "-m", "benchmarks.videogen", *sys.argv[1:]]
        ),
        "commit": git("rev-parse", "HEAD"),
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "job": {**job(args.steps, 0), "seed": "per repeat"},
        "seconds_per_job": {
            "median": median,
            "all": seconds,
            "graph_overhead": median["graph"] / median["in_process"] - 1,
        },
        "jobs_per_minute_at_concurrency_4": throughput,
        "jobs_per_throughput_point": args.jobs,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
