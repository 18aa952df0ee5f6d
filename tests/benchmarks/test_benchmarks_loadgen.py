"""The real generator against a real (fake-model) SSE server on loopback."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from benchmarks.loadgen.__main__ import main
from benchmarks.loadgen.compare import main as compare_main
from benchmarks.loadgen.runner import LoadPoint, RunConfig, run_sweep
from benchmarks.loadgen.stats import Slo
from benchmarks.loadgen.workload import Workload, WorkloadSpec

if TYPE_CHECKING:
    from conftest import FakeServer

MAX_TOKENS = 5
MIX = WorkloadSpec(
    video_share=0.5, repeat_share=0.25, text_share=0.25, video_seconds=(0.5,), max_tokens=MAX_TOKENS
)


async def test_concurrency_sweep_records_consistent_numbers(fake_server: FakeServer) -> None:
    config = RunConfig(
        base_url=fake_server.base_url,
        model="tiny",
        num_requests=6,
        warmup=1,
        slo=Slo(ttft_ms=10_000, tpot_ms=10_000),
    )
    before = len(fake_server.bodies)
    points = [LoadPoint(concurrency=1), LoadPoint(concurrency=3)]
    workload = Workload(MIX)
    runs = await run_sweep(config, workload, points, "fake", wait_ready_s=10)
    assert len(fake_server.bodies) - before == 1 + 1 + 2 * 6  # readiness probe, warm-up, runs
    for run in runs:
        s = run["summary"]
        assert (s["completed"], s["errors"]) == (6, 0)
        assert s["output_tokens"] == 6 * MAX_TOKENS and s["input_tokens"] == 6 * 7
        assert s["ttft_ms"]["p50"] >= 1e3 * fake_server.first_token_delay_s
        assert s["itl_ms"]["p50"] >= 1e3 * fake_server.token_delay_s * 0.9
        assert s["e2e_ms"]["p50"] >= s["ttft_ms"]["p50"]
        assert s["output_token_throughput"] == pytest.approx(s["output_tokens"] / s["duration_s"])
        assert s["goodput"]["good_requests"] == 6
    # Each load point takes the next slice of the request stream: no request is sent twice.
    # (The same workload object serves the expectation, so this checks the runner, not
    # whether the video encoder reproduces its bytes: test_benchmarks_workload does that.)
    sent = sorted(json.dumps(body) for body in fake_server.bodies[before + 2 :])
    expected = [json.loads(r.payload) for r in workload.prepare(range(12), "tiny")]
    assert sent == sorted(json.dumps(body) for body in expected)


async def test_wait_ready_retries_until_the_server_answers(fake_server: FakeServer) -> None:
    fake_server.unavailable_for = 2
    config = RunConfig(base_url=fake_server.base_url, model="tiny", num_requests=1)
    (run,) = await run_sweep(config, Workload(MIX), [LoadPoint(concurrency=1)], "fake", 10)
    assert fake_server.unavailable_for == 0
    assert (run["summary"]["completed"], run["summary"]["errors"]) == (1, 0)


async def test_poisson_rate_sends_every_request(fake_server: FakeServer) -> None:
    config = RunConfig(base_url=fake_server.base_url, model="tiny", num_requests=5, seed=3)
    (run,) = await run_sweep(config, Workload(MIX), [LoadPoint(rate=50.0)], "fake")
    assert run["rate"] == 50.0 and run["summary"]["completed"] == 5


async def test_duration_stops_issuing(fake_server: FakeServer) -> None:
    config = RunConfig(
        base_url=fake_server.base_url, model="tiny", num_requests=100, duration_s=0.3
    )
    text_only = WorkloadSpec(video_share=0, text_share=1, max_tokens=MAX_TOKENS)
    (run,) = await run_sweep(config, Workload(text_only), [LoadPoint(concurrency=2)], "fake")
    # Each request takes at least 30 + 4 * 10 ms, so two users finish at most ~10 in 0.3 s.
    assert 0 < run["summary"]["completed"] < 20


def test_cli_writes_results_and_compare_merges_them(
    fake_server: FakeServer, tmp_path: Path
) -> None:
    common = [
        "--base-url",
        fake_server.base_url,
        "--num-requests",
        "3",
        "--warmup",
        "0",
        "--max-tokens",
        "3",
        "--video-seconds",
        "0.5",
        "--text-share",
        "0.5",
    ]
    good, broken = tmp_path / "good.json", tmp_path / "broken.json"
    assert main([*common, "--label", "good", "--concurrency", "1,2", "--out", str(good)]) == 0
    assert main([*common, "--label", "broken", "--model", "broken", "--out", str(broken)]) == 1
    result = json.loads(good.read_text())
    assert [run["concurrency"] for run in result["runs"]] == [1, 2]
    assert result["workload"]["text_share"] == 0.5
    failed = json.loads(broken.read_text())["runs"][0]
    assert failed["summary"]["errors"] == 3 and "HTTP 500" in failed["error_samples"][0]

    assert compare_main([str(good), str(broken), "--out", str(tmp_path / "cmp")]) == 0
    table = (tmp_path / "cmp.md").read_text().splitlines()
    assert [line.split("|")[1:3] for line in table[2:]] == [
        [" good ", " c=1 "],
        [" good ", " c=2 "],
        [" broken ", " c=1 "],
    ]
