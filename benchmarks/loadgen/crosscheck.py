"""Our generator's numbers next to aiperf's for the same endpoint, load and workload.

    python -m benchmarks.loadgen.crosscheck LOADGEN.json AIPERF_EXPORT.json [--out FILE.md]

aiperf names differ from ours: its `inter_token_latency` is a request's decode
time per token after the first (our TPOT) and its `inter_chunk_latency` is the
gap between SSE chunks (our ITL).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

# (row name, path into our summary, aiperf metric, aiperf statistic)
ROWS = (
    ("TTFT mean (ms)", ("ttft_ms", "mean"), "time_to_first_token", "avg"),
    ("TTFT p50 (ms)", ("ttft_ms", "p50"), "time_to_first_token", "p50"),
    ("TTFT p99 (ms)", ("ttft_ms", "p99"), "time_to_first_token", "p99"),
    ("ITL mean (ms)", ("itl_ms", "mean"), "inter_chunk_latency", "avg"),
    ("ITL p50 (ms)", ("itl_ms", "p50"), "inter_chunk_latency", "p50"),
    ("TPOT mean (ms)", ("tpot_ms", "mean"), "inter_token_latency", "avg"),
    ("E2E mean (ms)", ("e2e_ms", "mean"), "request_latency", "avg"),
    ("E2E p50 (ms)", ("e2e_ms", "p50"), "request_latency", "p50"),
    ("requests/s", ("request_throughput",), "request_throughput", "avg"),
    ("output tokens/s", ("output_token_throughput",), "output_token_throughput", "avg"),
    ("completed requests", ("completed",), "request_count", "avg"),
)


def _ours(summary: dict, path: tuple[str, ...]) -> float | None:
    value = summary
    for key in path:
        value = value[key]
    return value


def _theirs(export: dict, metric: str, statistic: str) -> float | None:
    return (export.get(metric) or {}).get(statistic)


def table(loadgen: dict, aiperf: dict) -> str:
    """Markdown rows: metric, ours, aiperf's, and how far ours is from aiperf's in %."""
    (run,) = loadgen["runs"]
    workload = loadgen["workload"]
    lines = [
        f"{loadgen['base_url']}, concurrency {run['concurrency']}, "
        f"{loadgen['num_requests']} requests of {workload['max_tokens']} tokens, shares "
        f"video/repeat/text {workload['video_share']:g}/{workload['repeat_share']:g}/"
        f"{workload['text_share']:g}, started {loadgen['started_at']}",
        "",
        "| metric | loadgen | aiperf | difference |",
        "|---|---|---|---|",
    ]
    for name, path, metric, statistic in ROWS:
        ours, theirs = _ours(run["summary"], path), _theirs(aiperf, metric, statistic)
        difference = "-"
        if ours is not None and theirs:
            difference = f"{100 * (ours - theirs) / theirs:+.1f}%"
        lines.append(f"| {name} | {_format(ours)} | {_format(theirs)} | {difference} |")
    return "\n".join(lines)


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen.crosscheck")
    parser.add_argument("loadgen", type=Path, help="the generator's JSON (one load point)")
    parser.add_argument("aiperf", type=Path, help="aiperf's profile_export_aiperf.json")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args(argv)
    text = table(json.loads(args.loadgen.read_text()), json.loads(args.aiperf.read_text()))
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
