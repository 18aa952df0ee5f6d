"""Our generator's numbers next to aiperf's for the same endpoint, load and workload.

    python -m benchmarks.loadgen.crosscheck LOADGEN.json AIPERF_EXPORT.json [--out FILE.md]

aiperf names differ from ours: its `inter_token_latency` is a request's decode
time per token after the first (our TPOT) and its `inter_chunk_latency` is the
gap between SSE chunks (our ITL).

With `--server-metrics DIR` (Prometheus text scraped before and after each
tool's run: loadgen_before.txt, loadgen_after.txt, aiperf_before.txt,
aiperf_after.txt), the server's own means over each run are added: a third
opinion that tells a measuring error from a client that slowed the server down.
vLLM's engine starts its clock when a request reaches the engine, after the API
server has decoded the video, so its TTFT is lower than any client's.
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


# vLLM's histograms whose _sum/_count give a mean over one run, in ms.
SERVER_HISTOGRAMS = (
    ("server TTFT mean (ms)", "vllm:time_to_first_token_seconds"),
    ("server ITL mean (ms)", "vllm:inter_token_latency_seconds"),
    ("server E2E mean (ms)", "vllm:e2e_request_latency_seconds"),
)


def scrape_totals(text: str) -> dict[str, float]:
    """Sums every `name value` sample of a Prometheus text page by name, labels dropped."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        try:
            number = float(value)
        except ValueError:
            continue
        name = name.split("{", 1)[0]
        totals[name] = totals.get(name, 0.0) + number
    return totals


def server_mean_ms(before: str, after: str, histogram: str) -> float | None:
    """The histogram's mean over the samples added between two scrapes, None if none were."""
    start, end = scrape_totals(before), scrape_totals(after)
    count = end.get(f"{histogram}_count", 0.0) - start.get(f"{histogram}_count", 0.0)
    if count <= 0:
        return None
    return 1e3 * (end[f"{histogram}_sum"] - start.get(f"{histogram}_sum", 0.0)) / count


def server_rows(directory: Path) -> list[str]:
    """Rows of the server's own means during each tool's run (blank when it has no such metric)."""
    pages = {
        name: (directory / f"{name}.txt").read_text()
        for name in ("loadgen_before", "loadgen_after", "aiperf_before", "aiperf_after")
    }
    rows = []
    for name, histogram in SERVER_HISTOGRAMS:
        ours = server_mean_ms(pages["loadgen_before"], pages["loadgen_after"], histogram)
        theirs = server_mean_ms(pages["aiperf_before"], pages["aiperf_after"], histogram)
        rows.append(f"| {name} | {_format(ours)} | {_format(theirs)} | - |")
    return rows


def _format(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen.crosscheck")
    parser.add_argument("loadgen", type=Path, help="the generator's JSON (one load point)")
    parser.add_argument("aiperf", type=Path, help="aiperf's profile_export_aiperf.json")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--server-metrics", type=Path, help="directory of /metrics scrapes")
    args = parser.parse_args(argv)
    text = table(json.loads(args.loadgen.read_text()), json.loads(args.aiperf.read_text()))
    if args.server_metrics:
        text = "\n".join([text, *server_rows(args.server_metrics)])
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
