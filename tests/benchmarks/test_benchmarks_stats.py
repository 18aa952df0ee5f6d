"""Percentiles, latency distributions and goodput of a load point."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.loadgen.record import RequestRecord
from benchmarks.loadgen.stats import (
    Slo,
    distribution,
    max_rate_within_slo,
    percentile,
    spread,
    summarize,
)


def record(ttft_s: float, gap_s: float, tokens: int, kind: str = "video") -> RequestRecord:
    """A finished request sent at t=0 whose chunks arrive at ttft, ttft+gap, ..."""
    r = RequestRecord(kind=kind, start=0.0)
    for i in range(tokens):
        r.on_content(ttft_s + i * gap_s)
    r.finish(ttft_s + (tokens - 1) * gap_s)
    return r


@pytest.mark.parametrize("q", [0, 1, 50, 90, 99, 100])
def test_percentile_matches_numpy_linear(q: float) -> None:
    values = list(np.random.default_rng(3).exponential(size=37))
    assert percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_distribution_reports_milliseconds_and_none_when_empty() -> None:
    assert distribution([0.1, 0.2, 0.3]) == pytest.approx(
        {"mean": 200.0, "p50": 200.0, "p90": 280.0, "p99": 298.0}
    )
    assert distribution([]) == {"mean": None, "p50": None, "p90": None, "p99": None}


def test_slo_checks_ttft_and_tpot() -> None:
    fast = record(ttft_s=0.05, gap_s=0.01, tokens=5)
    slow_start = record(ttft_s=0.5, gap_s=0.01, tokens=5)
    slow_tokens = record(ttft_s=0.05, gap_s=0.1, tokens=5)
    slo = Slo(ttft_ms=100, tpot_ms=20)
    assert [slo.met_by(r) for r in (fast, slow_start, slow_tokens)] == [True, False, False]
    assert Slo().met_by(slow_tokens)
    failed = RequestRecord(kind="text", start=0.0)
    failed.fail("HTTP 500", 0.1)
    assert not Slo().met_by(failed)


def test_summarize_counts_throughput_goodput_and_errors() -> None:
    good = [record(0.05, 0.01, 4) for _ in range(3)]
    late = [record(1.0, 0.01, 4, kind="text")]
    failed = RequestRecord(kind="video", start=0.0)
    failed.fail("HTTP 500", 0.2)
    summary = summarize([*good, *late, failed], duration_s=2.0, slo=Slo(ttft_ms=100))
    assert (summary["requests"], summary["completed"], summary["errors"]) == (5, 4, 1)
    assert summary["request_throughput"] == pytest.approx(2.0)
    assert summary["output_token_throughput"] == pytest.approx(8.0)
    assert summary["goodput"]["good_requests"] == 3
    assert summary["goodput"]["request_goodput"] == pytest.approx(1.5)
    assert summary["itl_ms"]["p50"] == pytest.approx(10.0)
    assert summary["tpot_ms"]["mean"] == pytest.approx(10.0)
    assert summary["ttft_ms_by_kind"]["text"]["p50"] == pytest.approx(1000.0)
    assert summary["ttft_ms_by_kind"]["video"]["p50"] == pytest.approx(50.0)


def test_slo_attainment_counts_failures_as_misses() -> None:
    failed = RequestRecord(kind="video", start=0.0)
    failed.fail("HTTP 500", 0.2)
    records = [record(0.05, 0.01, 4), record(0.05, 0.2, 4), failed, record(0.05, 0.01, 4)]
    goodput = summarize(records, duration_s=1.0, slo=Slo(ttft_ms=500, tpot_ms=50))["goodput"]
    assert (goodput["good_requests"], goodput["slo_attainment"]) == (2, 0.5)
    assert (goodput["slo_ttft_ms"], goodput["slo_tpot_ms"]) == (500, 50)


def test_spread_is_median_min_and_max_of_what_was_measured() -> None:
    assert spread([3.0, 1.0, None, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0}
    assert spread([None]) == {"median": None, "min": None, "max": None}


def test_max_rate_within_slo_stops_at_the_first_rate_that_misses_the_target() -> None:
    sweep = [(8.0, 0.95), (2.0, 1.0), (16.0, 0.6), (4.0, 0.9), (32.0, 0.95)]
    assert max_rate_within_slo(sweep) == 8.0  # 32/s met it again by luck: not sustained
    assert max_rate_within_slo([(1.0, 0.5), (2.0, 1.0)]) is None
    assert max_rate_within_slo([(1.0, 0.85)], target=0.8) == 1.0
