"""Tables and plots of a `benchmarks.compare` result, generated from its JSON only.

    python -m benchmarks.report benchmarks/results/compare/concurrency-20261202T080000Z.json

writes, beside the JSON, `<name>.md` (provenance, the headline table with the
median and min-max over repeats, the goals against the in-process engine, peak
memory, the per-stage breakdown) and `<name>_ttft.png`, `<name>_throughput.png`
(median, bars from min to max). Every number in them comes from the JSON, so a
table in a README can name the file and the command that made it: `--readme
FILE` rewrites the block between the two `benchmarks.report` markers in FILE
with this run's provenance, headline table, plots and goals.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from benchmarks.loadgen.plots import draw, x_value

HEADLINE = (
    ("TTFT p50 ms", "ttft_p50_ms", 1),
    ("TTFT p99 ms", "ttft_p99_ms", 1),
    ("TPOT ms", "tpot_mean_ms", 2),
    ("out tok/s", "output_tokens_per_s", 0),
    ("goodput req/s", "goodput_req_per_s", 2),
    ("SLO att.", "slo_attainment", 2),
    ("errors", "errors", 0),
)


def cell(value: dict, digits: int) -> str:
    """`median [min-max]`, or just the value when every repeat agreed."""
    median, low, high = value["median"], value["min"], value["max"]
    if median is None:
        return "-"
    if low == high:
        return f"{median:.{digits}f}"
    return f"{median:.{digits}f} [{low:.{digits}f}-{high:.{digits}f}]"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def headline_table(result: dict) -> list[str]:
    rows = [
        [row["system"], row["load"], *(cell(row[key], d) for _, key, d in HEADLINE)]
        + [cell(row["peak_rss_mib"]["total"], 0)]
        for row in result["aggregate"]
    ]
    return table(["system", "load", *(h for h, _, _ in HEADLINE), "peak RSS MiB"], rows)


def goals(result: dict) -> list[str]:
    """The ratios the benchmark issue sets goals for, against the in-process engine and vLLM."""
    by = {(row["system"], row["load"]): row for row in result["aggregate"]}
    lines = []
    for system, limit in (("agg", 1.25), ("disagg", 1.5)):
        ratio = _ratio(by, system, "engine", "c=1", "ttft_p50_ms")
        if ratio is not None:
            lines.append(f"- {system} TTFT p50 at c=1: {ratio:.2f}x in-process (goal <= {limit}x)")
    for other, limit in (("engine", 0.95), ("vllm", 1.3)):
        ratio = _ratio(by, "agg", other, "c=16", "output_tokens_per_s")
        if ratio is not None:
            name = "in-process" if other == "engine" else "plain vLLM"
            lines.append(f"- agg tokens/s at c=16: {ratio:.2f}x {name} (goal >= {limit}x)")
    best = result["headline"]
    if "agg" in best and "vllm" in best:
        agg, vllm = (best[s]["max_goodput_req_per_s"] for s in ("agg", "vllm"))
        lines.append(f"- best goodput: agg {agg:.2f}, vLLM {vllm:.2f} req/s (goal: agg >= vLLM)")
    return lines


def _ratio(by: dict, system: str, other: str, load: str, metric: str) -> float | None:
    mine, theirs = by.get((system, load)), by.get((other, load))
    if not mine or not theirs or not theirs[metric]["median"] or mine[metric]["median"] is None:
        return None
    return mine[metric]["median"] / theirs[metric]["median"]


def stage_table(result: dict) -> list[str]:
    """Mean ms per call of each graph stage, per load point (median over repeats)."""
    rows = [
        [row["system"], row["load"], stage, cell(value, 1)]
        for row in result["aggregate"]
        for stage, value in row["stages_mean_ms"].items()
    ]
    return table(["system", "load", "stage (component.endpoint)", "mean ms per call"], rows)


def memory_table(result: dict) -> list[str]:
    rows = [
        [row["system"], row["load"], name, cell(value, 0)]
        for row in result["aggregate"]
        for name, value in row["peak_rss_mib"].items()
        if name != "total"
    ]
    return table(["system", "load", "process", "peak RSS MiB"], rows)


def provenance_lines(result: dict, source: str) -> list[str]:
    """`source`: how to name the JSON, as markdown."""
    p, c = result["provenance"], result["config"]
    dirty = " (uncommitted changes)" if p["git_dirty"] else ""
    skipped = "".join(f"; {s} skipped: {why}" for s, why in result["skipped"].items())
    return [
        f"From {source}, made by `{p['command']}` (pinned to cores {p['cpus_used']}).",
        "",
        f"Commit {p['git_commit'][:10]}{dirty}, {p['date']}, {p['cpu_model']} "
        f"({p['cpus_online']} cores online), load average {p['load_average_before'][0]:.1f} "
        f"before and {p['load_average_after'][0]:.1f} after, {p['wall_s'] / 60:.0f} min. "
        f"Scenario `{c['scenario']}`: {c['description']}; {c['num_requests']} requests per "
        f"load point, {c['repeats']} repeats interleaved (order rotated), "
        f"{c['workload']['max_tokens']} output tokens each; SLO TTFT <= {c['slo']['ttft_ms']:g} ms "
        f"and TPOT <= {c['slo']['tpot_ms']:g} ms{skipped}. Cells: median [min-max] over repeats.",
    ]


def markdown(result: dict, json_name: str) -> str:
    parts = [
        *provenance_lines(result, f"`{json_name}`"),
        "",
        *headline_table(result),
        "",
        *goals(result),
        "",
        "Peak RSS per process (VmHWM over each load point):",
        "",
        *memory_table(result),
    ]
    if any(row["stages_mean_ms"] for row in result["aggregate"]):
        parts += ["", "Where a graph request's time goes (workers' own timers):", ""]
        parts += stage_table(result)
    return "\n".join(parts) + "\n"


def plot(result: dict, metric: str, ylabel: str, path: Path) -> bool:
    """Median per load point, one line per system, bars from min to max over repeats."""
    lines: dict[str, list] = {}
    for row in result["aggregate"]:
        value = row[metric]
        if value["median"] is not None:
            point = (x_value(row), value["median"], value["min"], value["max"])
            lines.setdefault(row["system"], []).append(point)
    rated = all(row["rate"] is not None for row in result["aggregate"])
    return draw(lines, ylabel, rated, path)


BEGIN = "<!-- benchmarks.report: generated from the JSON it names; do not edit -->"
END = "<!-- end of benchmarks.report -->"


def readme_block(result: dict, json_path: Path, readme: Path) -> str:
    """The run's provenance, headline table, plots and goals, with links relative to `readme`."""
    link = os.path.relpath(json_path, readme.parent)
    stem = link.removesuffix(".json")
    parts = [
        BEGIN,
        *provenance_lines(result, f"[`{link}`]({link}) (all tables: [`.md`]({stem}.md))"),
        "",
        *headline_table(result),
        "",
        f"![TTFT p50]({stem}_ttft.png) ![output tokens/s]({stem}_throughput.png)",
        "",
        *goals(result),
        END,
    ]
    return "\n".join(parts)


def update_readme(readme: Path, block: str) -> None:
    text = readme.read_text()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"{readme} has no block between {BEGIN!r} and {END!r}")
    readme.write_text(text[:start] + block + text[end + len(END) :])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("result", type=Path, help="a JSON written by benchmarks.compare")
    parser.add_argument("--readme", type=Path, help="a markdown file whose block to rewrite")
    args = parser.parse_args(argv)
    result = json.loads(args.result.read_text())
    stem = args.result.with_suffix("")
    text = markdown(result, args.result.name)
    stem.with_suffix(".md").write_text(text)
    print(text)
    plot(result, "ttft_p50_ms", "TTFT p50 (ms)", stem.with_name(stem.name + "_ttft.png"))
    plot(
        result,
        "output_tokens_per_s",
        "output tokens/s",
        stem.with_name(stem.name + "_throughput.png"),
    )
    if args.readme:
        update_readme(args.readme, readme_block(result, args.result, args.readme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
