"""The cross-check table lines up our metric names with aiperf's."""

from __future__ import annotations

from benchmarks.loadgen.crosscheck import server_mean_ms, table
from benchmarks.loadgen.workload import WorkloadSpec

LOADGEN = {
    "base_url": "http://127.0.0.1:8001/v1",
    "num_requests": 32,
    "started_at": "2026-11-25T05:11:00Z",
    "workload": WorkloadSpec().to_json(),
}


def test_rows_pair_our_metrics_with_aiperf_and_show_the_difference() -> None:
    summary = {
        "ttft_ms": {"mean": 110.0, "p50": 100.0, "p99": 200.0},
        "itl_ms": {"mean": 10.0, "p50": 9.0},
        "tpot_ms": {"mean": 12.0},
        "e2e_ms": {"mean": 500.0, "p50": 450.0},
        "request_throughput": 8.0,
        "output_token_throughput": 256.0,
        "completed": 32,
    }
    aiperf = {
        "time_to_first_token": {"avg": 100.0, "p50": 100.0, "p99": 250.0},
        "inter_chunk_latency": {"avg": 10.0, "p50": 9.0},
        "inter_token_latency": {"avg": 12.0},
        "request_latency": {"avg": 500.0, "p50": 450.0},
        "request_throughput": {"avg": 10.0},
        "output_token_throughput": {"avg": 256.0},
    }
    rows = {
        cells[0]: cells[1:]
        for line in table(
            LOADGEN | {"runs": [{"concurrency": 4, "summary": summary}]}, aiperf
        ).splitlines()[4:]
        for cells in [[c.strip() for c in line.strip("|").split("|")]]
    }
    assert rows["TTFT mean (ms)"] == ["110.00", "100.00", "+10.0%"]
    assert rows["TTFT p99 (ms)"] == ["200.00", "250.00", "-20.0%"]
    assert rows["TPOT mean (ms)"] == ["12.00", "12.00", "+0.0%"]
    assert rows["requests/s"] == ["8.00", "10.00", "-20.0%"]
    assert rows["completed requests"] == ["32.00", "-", "-"]


def test_server_mean_is_taken_over_the_samples_added_between_two_scrapes() -> None:
    before = """# HELP vllm:e2e_request_latency_seconds Histogram
vllm:e2e_request_latency_seconds_sum{engine="0",model_name="tiny"} 10.0
vllm:e2e_request_latency_seconds_count{engine="0",model_name="tiny"} 40.0
"""
    after = before.replace(" 10.0", " 13.0").replace(" 40.0", " 50.0")
    histogram = "vllm:e2e_request_latency_seconds"
    assert server_mean_ms(before, after, histogram) == 300.0
    assert server_mean_ms(before, before, histogram) is None
    assert server_mean_ms('{"detail": "Not Found"}', "", histogram) is None
