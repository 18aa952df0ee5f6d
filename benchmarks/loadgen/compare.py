"""Merges result JSONs of several systems into one markdown table and two PNG plots.

    python -m benchmarks.loadgen.compare benchmarks/results/{engine,agg,disagg,vllm}.json \\
        --out benchmarks/results/comparison

writes comparison.md, comparison_ttft.png (TTFT p50 vs load) and
comparison_throughput.png (output tokens/s vs load), one line per system.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from benchmarks.loadgen.plots import plot_sweep
from benchmarks.loadgen.report import markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loadgen.compare")
    parser.add_argument("results", nargs="+", type=Path, help="JSON files from the loadgen")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("benchmarks/results/comparison"),
        help="path prefix of the .md and .png files",
    )
    args = parser.parse_args(argv)
    results = [json.loads(path.read_text()) for path in args.results]
    table = markdown_table(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(table + "\n")
    print(table)
    plot_sweep(
        results,
        lambda s: s["ttft_ms"]["p50"],
        "TTFT p50 (ms)",
        args.out.with_name(args.out.name + "_ttft.png"),
    )
    plot_sweep(
        results,
        lambda s: s["output_token_throughput"],
        "output tokens/s",
        args.out.with_name(args.out.name + "_throughput.png"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
