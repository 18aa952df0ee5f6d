"""Result JSONs as one markdown table: a row per (system, load point)."""

from __future__ import annotations

from collections.abc import Sequence

COLUMNS = (
    "system",
    "load",
    "ok/err",
    "req/s",
    "out tok/s",
    "TTFT p50",
    "TTFT p90",
    "TTFT p99",
    "ITL p50",
    "ITL p99",
    "TPOT mean",
    "E2E p50",
    "goodput req/s",
)


def load_name(run: dict) -> str:
    """`c=4` for a closed-loop point, `r=2/s` (and its in-flight cap) for a Poisson one."""
    if run["rate"] is None:
        return f"c={run['concurrency']}"
    cap = f" c<={run['concurrency']}" if run["concurrency"] else ""
    return f"r={run['rate']:g}/s{cap}"


def _number(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _row(label: str, run: dict) -> list[str]:
    s = run["summary"]
    ttft, itl = s["ttft_ms"], s["itl_ms"]
    return [
        label,
        load_name(run),
        f"{s['completed']}/{s['errors']}",
        _number(s["request_throughput"], 2),
        _number(s["output_token_throughput"]),
        _number(ttft["p50"]),
        _number(ttft["p90"]),
        _number(ttft["p99"]),
        _number(itl["p50"]),
        _number(itl["p99"]),
        _number(s["tpot_ms"]["mean"]),
        _number(s["e2e_ms"]["p50"]),
        _number(s["goodput"]["request_goodput"], 2),
    ]


def markdown_table(results: Sequence[dict]) -> str:
    """Latencies in ms. Goodput counts requests within the SLOs each run was given."""
    rows = [_row(result["label"], run) for result in results for run in result["runs"]]
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
