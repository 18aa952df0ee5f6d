"""How long each stage of a worker's work takes, as histogram buckets in its stats.

A worker times its stages (fetch, decode, encode, embedding transfer, prefill,
KV transfer) with `StageTimes.time(stage)`, which also makes each a span of the
request's trace (`runtime.tracing`); `stats()` flattens the buckets into
the worker's numeric stats as `stage_seconds:<stage>:<le>` (cumulative counts,
Prometheus' convention), `...:sum` and `...:count`. The frontend's /metrics
turns them back into one histogram family, so a stage added here needs no
change there.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterator
from contextlib import contextmanager

from runtime import tracing

PREFIX = "stage_seconds:"
BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class StageTimes:
    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}
        self._sums: dict[str, float] = {}

    def observe(self, stage: str, seconds: float) -> None:
        counts = self._counts.setdefault(stage, [0] * (len(BUCKETS) + 1))
        counts[bisect.bisect_left(BUCKETS, seconds)] += 1
        self._sums[stage] = self._sums.get(stage, 0.0) + seconds

    @contextmanager
    def time(self, stage: str) -> Iterator[None]:
        """Times the block into the histogram, and traces it as a span of the request's trace."""
        started = time.perf_counter()
        try:
            with tracing.span(stage):
                yield
        finally:
            self.observe(stage, time.perf_counter() - started)

    def stats(self) -> dict[str, float]:
        flat: dict[str, float] = {}
        for stage, counts in self._counts.items():
            total = 0
            for bound, count in zip([*BUCKETS, float("inf")], counts, strict=True):
                total += count
                flat[f"{PREFIX}{stage}:{bound}"] = total
            flat[f"{PREFIX}{stage}:sum"] = self._sums[stage]
            flat[f"{PREFIX}{stage}:count"] = total
        return flat
