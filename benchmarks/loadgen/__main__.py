"""Load generator for any OpenAI-compatible chat endpoint, with video requests.

    python -m benchmarks.loadgen --base-url http://127.0.0.1:8000/v1 --model tiny \\
        --label vidgraph-agg --concurrency 1,2,4,8,16,32 --num-requests 64 \\
        [--rate 2,4] [--duration S] [--warmup N] [--wait-ready S] \\
        [--video-share F] [--repeat-share F] [--text-share F] [--video-seconds 1,2,4] \\
        [--max-tokens 32] [--slo-ttft-ms MS] [--slo-tpot-ms MS] [--seed 0] \\
        [--out benchmarks/results/LABEL.json] [--save-requests]

Writes one JSON file per sweep (one entry per load point) and prints a table.
Exits 1 when no request of the whole sweep succeeded, so a driver script notices
a broken server instead of plotting zeros.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from pathlib import Path

from benchmarks.loadgen.options import add_workload_arguments, numbers, workload_spec
from benchmarks.loadgen.report import markdown_table
from benchmarks.loadgen.runner import LoadPoint, RunConfig, run_sweep
from benchmarks.loadgen.stats import Slo
from benchmarks.loadgen.workload import Workload

RESULTS = Path(__file__).resolve().parent.parent / "results"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.loadgen",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    p.add_argument("--model", default="tiny", help="the `model` field of every request")
    p.add_argument("--label", default="run", help="the system's name in tables and plots")
    p.add_argument("--out", type=Path, help="results JSON (default benchmarks/results/LABEL.json)")
    load = p.add_argument_group("load")
    load.add_argument(
        "--concurrency",
        type=numbers(int),
        default=[1],
        help="closed-loop sweep, e.g. 1,2,4,8,16,32; with --rate: in-flight cap",
    )
    load.add_argument(
        "--rate",
        type=numbers(float),
        help="Poisson arrival rates in requests/s, e.g. 1,2,4 (open loop)",
    )
    load.add_argument(
        "--num-requests",
        type=int,
        help="requests per load point (default 100; with --duration, the cap: 1000)",
    )
    load.add_argument("--duration", type=float, help="seconds per load point")
    load.add_argument("--warmup", type=int, default=2, help="unmeasured requests before the sweep")
    load.add_argument(
        "--wait-ready",
        type=float,
        default=0.0,
        help="first wait up to this many seconds for the server to answer a request",
    )
    load.add_argument("--request-timeout", type=float, default=600.0)
    add_workload_arguments(p)
    slo = p.add_argument_group("goodput")
    slo.add_argument("--slo-ttft-ms", type=float, help="a good request's TTFT is at most this")
    slo.add_argument(
        "--slo-tpot-ms", type=float, help="a good request's time per output token is at most this"
    )
    p.add_argument("--save-requests", action="store_true", help="keep per-request records")
    p.add_argument(
        "--in-process",
        action="store_true",
        help="no server: run each request through the engine in this process (the baseline)",
    )
    return p.parse_args(argv)


def load_points(args: argparse.Namespace) -> list[LoadPoint]:
    if args.rate:
        cap = max(args.concurrency) if args.concurrency != [1] else None
        return [LoadPoint(concurrency=cap, rate=rate) for rate in args.rate]
    return [LoadPoint(concurrency=c) for c in args.concurrency]


async def sweep(args: argparse.Namespace, config: RunConfig, workload: Workload) -> list[dict]:
    if not args.in_process:
        return await run_sweep(
            config, workload, load_points(args), args.label, wait_ready_s=args.wait_ready
        )
    from benchmarks.inprocess import InProcess

    baseline = await InProcess.load(args.model)
    try:
        return await run_sweep(
            config, workload, load_points(args), args.label, sender=baseline.send
        )
    finally:
        await baseline.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = workload_spec(args)
    num_requests = args.num_requests or (1000 if args.duration else 100)
    config = RunConfig(
        base_url=args.base_url,
        model=args.model,
        num_requests=num_requests,
        duration_s=args.duration,
        warmup=args.warmup,
        slo=Slo(ttft_ms=args.slo_ttft_ms, tpot_ms=args.slo_tpot_ms),
        seed=args.seed,
        request_timeout_s=args.request_timeout,
        save_requests=args.save_requests,
    )
    started = time.time()
    runs = asyncio.run(sweep(args, config, Workload(spec)))
    result = {
        "label": args.label,
        "base_url": "in-process" if args.in_process else args.base_url,
        "model": args.model,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "command": " ".join(sys.argv),
        "host": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "num_requests": num_requests,
        "duration_s": args.duration,
        "warmup": args.warmup,
        "workload": spec.to_json(),
        "runs": runs,
    }
    out = args.out or RESULTS / f"{args.label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(markdown_table([result]))
    print(f"\nwrote {out}")
    return 0 if any(run["summary"]["completed"] for run in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
