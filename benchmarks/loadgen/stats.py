"""Latency distributions, throughput and goodput of one load point.

Definitions follow vLLM's `benchmark_serving` so the numbers read the same as the
ones users already know: TTFT is send to first content chunk; ITL is the gap
between consecutive content chunks, pooled over all requests; TPOT is a request's
decode time over its output tokens after the first. Goodput follows DistServe
(Zhong et al., OSDI 2024): a request is good when it succeeded within every SLO
(TTFT and TPOT); SLO attainment is the share of requests that were good; and a
system's goodput is the highest request rate it serves at the attainment target
(90 %), which `max_rate_within_slo` reads off a rate sweep.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from benchmarks.loadgen.record import RequestRecord

PERCENTILES = (50, 90, 99)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation (numpy's default); `values` not empty."""
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def distribution(values_s: Sequence[float]) -> dict[str, float | None]:
    """Mean and percentiles of durations given in seconds, in milliseconds; None if empty."""
    values_ms = [1e3 * v for v in values_s]
    if not values_ms:
        return {"mean": None, **{f"p{q}": None for q in PERCENTILES}}
    mean = sum(values_ms) / len(values_ms)
    return {"mean": mean, **{f"p{q}": percentile(values_ms, q) for q in PERCENTILES}}


ATTAINMENT_TARGET = 0.9  # DistServe's: 90 % of requests within every SLO


@dataclass(frozen=True)
class Slo:
    """Per-request service-level objectives; None means that objective is not checked."""

    ttft_ms: float | None = None
    tpot_ms: float | None = None

    def met_by(self, record: RequestRecord) -> bool:
        """A request is good when it succeeded, and its TTFT and TPOT are in bounds."""
        if not record.ok:
            return False
        if self.ttft_ms is not None and 1e3 * record.ttft_s > self.ttft_ms:
            return False
        tpot_s = record.tpot_s
        return self.tpot_ms is None or tpot_s is None or 1e3 * tpot_s <= self.tpot_ms


def summarize(records: Sequence[RequestRecord], duration_s: float, slo: Slo) -> dict:
    """Everything a results table needs about one load point, as plain JSON-able values."""
    ok = [r for r in records if r.ok]
    good = [r for r in ok if slo.met_by(r)]
    output_tokens = sum(r.output_tokens for r in ok)
    per_second = 1 / duration_s if duration_s > 0 else 0.0
    return {
        "requests": len(records),
        "completed": len(ok),
        "errors": len(records) - len(ok),
        "duration_s": duration_s,
        "request_throughput": len(ok) * per_second,
        "output_token_throughput": output_tokens * per_second,
        "input_tokens": sum(r.input_tokens or 0 for r in ok),
        "output_tokens": output_tokens,
        "ttft_ms": distribution([r.ttft_s for r in ok]),
        "itl_ms": distribution([gap for r in ok for gap in r.itl_s]),
        "tpot_ms": distribution([r.tpot_s for r in ok if r.tpot_s is not None]),
        "e2e_ms": distribution([r.e2e_s for r in ok]),
        "goodput": {
            "slo_ttft_ms": slo.ttft_ms,
            "slo_tpot_ms": slo.tpot_ms,
            "good_requests": len(good),
            "slo_attainment": len(good) / len(records) if records else None,
            "request_goodput": len(good) * per_second,
            "output_token_goodput": sum(r.output_tokens for r in good) * per_second,
        },
        "ttft_ms_by_kind": {
            kind: distribution([r.ttft_s for r in ok if r.kind == kind])
            for kind in sorted({r.kind for r in ok})
        },
    }


def spread(values: Sequence[float | None]) -> dict[str, float | None]:
    """Median, min and max of one metric over repeats (missing values left out)."""
    present = [v for v in values if v is not None]
    if not present:
        return {"median": None, "min": None, "max": None}
    return {"median": percentile(present, 50), "min": min(present), "max": max(present)}


def max_rate_within_slo(
    points: Sequence[tuple[float, float | None]], target: float = ATTAINMENT_TARGET
) -> float | None:
    """DistServe's goodput: the highest offered rate whose SLO attainment meets `target`.

    `points` are (offered request rate, attainment) of one system's rate sweep. A
    rate only counts if every lower rate met the target too (a lucky point past
    saturation is not a sustained rate); None when even the lowest rate misses.
    """
    best = None
    for rate, attainment in sorted(points):
        if attainment is None or attainment < target:
            break
        best = rate
    return best
