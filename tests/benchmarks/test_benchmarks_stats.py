"""Percentiles, latency distributions and goodput of a load point."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.loadgen.record import RequestRecord
from benchmarks.loadgen.stats import Slo, distribution, percentile, summarize


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


def test_slo_checks_ttft_and_mean_itl() -> None:
    fast = record(ttft_s=0.05, gap_s=0.01, tokens=5)
    slow_start = record(ttft_s=0.5, gap_s=0.01, tokens=5)
    slow_tokens = record(ttft_s=0.05, gap_s=0.1, tokens=5)
    slo = Slo(ttft_ms=100, itl_ms=20)
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
