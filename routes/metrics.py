"""What the frontend's `/metrics` says, in Prometheus' text format.

The frontend observes what only it can see (status codes, TTFT, inter-token
latency, tokens); every worker's own counters (embedding cache hits, bytes
moved over NIXL, prefill queue depth...) are scraped from its stats endpoint at
scrape time and exported as one gauge family labelled by component, instance and
stat, so adding a counter to a worker needs no change here.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

# Worker stats at scrape time: component -> instance id -> stat name -> value.
WorkerStats = dict[str, dict[str, dict[str, float]]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


class _WorkerStatsCollector(Collector):
    def __init__(self) -> None:
        self.latest: WorkerStats = {}

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "vidgraph_worker_stat",
            "A worker's own counter, as its stats endpoint reported it at scrape time",
            labels=["component", "instance", "stat"],
        )
        for component, instances in sorted(self.latest.items()):
            for instance, stats in sorted(instances.items()):
                for stat, value in sorted(stats.items()):
                    if isinstance(value, int | float):  # a label-like stat has no gauge value
                        family.add_metric([component, instance, stat], float(value))
        yield family


class FrontendMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "vidgraph_requests",
            "Chat completion requests by HTTP status",
            ["status"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "vidgraph_requests_in_flight", "Requests being answered now", registry=self.registry
        )
        self.ttft = Histogram(
            "vidgraph_time_to_first_token_seconds",
            "From request to the first generated token",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.itl = Histogram(
            "vidgraph_inter_token_latency_seconds",
            "Between consecutive generated tokens",
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.prompt_tokens = Counter(
            "vidgraph_prompt_tokens", "Prompt tokens, video tokens included", registry=self.registry
        )
        self.completion_tokens = Counter(
            "vidgraph_completion_tokens", "Generated tokens", registry=self.registry
        )
        self._workers = _WorkerStatsCollector()
        self.registry.register(self._workers)

    def render(self, worker_stats: WorkerStats) -> tuple[bytes, str]:
        self._workers.latest = worker_stats
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
