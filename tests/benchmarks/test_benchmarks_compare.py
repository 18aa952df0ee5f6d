"""The comparison driver's bookkeeping: order rotation, spread over repeats, provenance, report."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from benchmarks.compare import aggregate, headline, rotated
from benchmarks.loadgen.record import RequestRecord
from benchmarks.loadgen.stats import Slo, summarize
from benchmarks.provenance import finish, format_cpus, parse_cpus, provenance
from benchmarks.report import BEGIN, END, markdown, readme_block, update_readme
from benchmarks.systems import System, stage_means, stage_totals

ROOT = Path(__file__).resolve().parents[2]


def summary(ttft_s: float, requests: int = 4, duration_s: float = 1.0) -> dict:
    records = []
    for _ in range(requests):
        r = RequestRecord(kind="video", start=0.0)
        for i in range(4):
            r.on_content(ttft_s + 0.01 * i)
        r.finish(ttft_s + 0.03)
        records.append(r)
    return summarize(records, duration_s, Slo(ttft_ms=500, tpot_ms=50))


def run(system: str, repeat: int, ttft_s: float, rss: float, **load) -> dict:
    return {
        "system": system,
        "repeat": repeat,
        "concurrency": load.get("concurrency"),
        "rate": load.get("rate"),
        "summary": summary(ttft_s),
        "peak_rss_mib": {"main": rss},
        "stages": {"EncodeWorker.encode": {"calls": 4, "mean_ms": 1e3 * ttft_s / 2}},
    }


def test_each_system_takes_each_position_once_over_as_many_repeats() -> None:
    systems = [System(name, None, dict) for name in ("engine", "agg", "disagg")]  # type: ignore[arg-type]
    orders = [[s.name for s in rotated(systems, r)] for r in range(3)]
    assert orders == [
        ["engine", "agg", "disagg"],
        ["agg", "disagg", "engine"],
        ["disagg", "engine", "agg"],
    ]
    assert all(sorted(position) == sorted(orders[0]) for position in zip(*orders, strict=True))


def test_aggregate_gives_median_and_range_over_repeats_per_system_and_load() -> None:
    runs = [
        run("agg", r, ttft, rss, concurrency=1)
        for r, (ttft, rss) in enumerate([(0.03, 500.0), (0.01, 700.0), (0.02, 600.0)])
    ]
    runs.append(run("engine", 0, 0.01, 900.0, concurrency=1))
    rows = {row["system"]: row for row in aggregate(runs)}
    agg = rows["agg"]
    assert (agg["load"], agg["repeats"]) == ("c=1", 3)
    assert agg["ttft_p50_ms"] == pytest.approx({"median": 20.0, "min": 10.0, "max": 30.0})
    assert agg["peak_rss_mib"]["total"] == {"median": 600.0, "min": 500.0, "max": 700.0}
    assert agg["stages_mean_ms"]["EncodeWorker.encode"]["median"] == pytest.approx(10.0)
    assert agg["slo_attainment"]["median"] == 1.0
    assert rows["engine"]["repeats"] == 1


def test_headline_reads_distserve_goodput_off_a_rate_sweep() -> None:
    runs = [
        run("agg", 0, ttft, 1.0, rate=rate) for rate, ttft in ((1.0, 0.1), (2.0, 0.2), (4.0, 0.9))
    ]
    best = headline(aggregate(runs))["agg"]
    assert best["max_rate_within_slo"] == 2.0  # at 4/s TTFT is 900 ms > 500: attainment 0
    assert best["max_goodput_req_per_s"] == pytest.approx(4.0)


def test_cpu_lists_read_and_write_like_taskset() -> None:
    assert parse_cpus("0-2,5") == {0, 1, 2, 5}
    assert format_cpus({5, 0, 1, 2}) == "0-2,5"
    assert format_cpus(parse_cpus("3")) == "3"


def test_provenance_names_commit_machine_load_versions_and_command() -> None:
    record = finish(provenance(ROOT, {0}, ["python", "-m", "benchmarks.compare"]), 0.0)
    assert len(record["git_commit"]) == 40 and isinstance(record["git_dirty"], bool)
    assert record["cpus_used"] == "0" and record["cpu_model"]
    assert len(record["load_average_before"]) == len(record["load_average_after"]) == 3
    assert record["packages"]["torch"] and record["command"] == "python -m benchmarks.compare"
    assert record["date"].endswith("Z") and record["wall_s"] > 0


def test_stage_means_are_per_call_between_two_scrapes() -> None:
    def scrape(calls: int, seconds: float) -> str:
        """Two encode workers' counters, as /metrics shows them."""
        line = 'vidgraph_worker_stat{{component="EncodeWorker",instance="{}",stat="{}_encode"}} {}'
        return "\n".join(
            line.format(instance, stat, value)
            for instance in ("a", "b")
            for stat, value in (("requests", calls), ("request_seconds", seconds))
        )

    before, after = stage_totals(scrape(2, 0.2)), stage_totals(scrape(5, 0.5))
    assert before == {"EncodeWorker.encode": {"calls": 4.0, "seconds": 0.4}}
    assert stage_means(before, after)["EncodeWorker.encode"] == pytest.approx(
        {"calls": 6.0, "mean_ms": 100.0}
    )


def a_result() -> dict:
    runs = [
        run(s, r, 0.01 * (r + 1), 100.0, concurrency=1) for s in ("engine", "agg") for r in range(3)
    ]
    rows = aggregate(runs)
    prov = finish(provenance(ROOT, set(os.sched_getaffinity(0)), ["python", "-m", "x"]), 0.0)
    return {
        "provenance": prov,
        "config": {
            "scenario": "concurrency",
            "description": "mix",
            "num_requests": 4,
            "repeats": 3,
            "workload": {"max_tokens": 4},
            "slo": {"ttft_ms": 500.0, "tpot_ms": 50.0},
        },
        "skipped": {"vllm": "not installed"},
        "aggregate": rows,
        "headline": headline(rows),
    }


def test_report_rewrites_only_the_readme_block_with_links_to_the_run(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n{BEGIN}\nold numbers\n{END}\n\nhand-written\n")
    json_path = tmp_path / "results" / "compare" / "run.json"
    update_readme(readme, readme_block(a_result(), json_path, readme))
    text = readme.read_text()
    assert text.startswith(f"# Title\n\n{BEGIN}\n") and text.endswith(f"{END}\n\nhand-written\n")
    assert "old numbers" not in text
    assert "[`results/compare/run.json`](results/compare/run.json)" in text
    assert "![TTFT p50](results/compare/run_ttft.png)" in text


def test_report_names_its_json_and_command_and_shows_the_spread() -> None:
    result = a_result()
    text = markdown(result, "run.json")
    assert (
        "`run.json`" in text and "`python -m x`" in text and "vllm skipped: not installed" in text
    )
    assert "| agg | c=1 | 20.0 [10.0-30.0] |" in text
    assert "- agg TTFT p50 at c=1: 1.00x in-process (goal <= 1.25x)" in text
