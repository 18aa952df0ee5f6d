"""What the frontend's `/metrics` says, in Prometheus' text format, under vLLM's names.

A Grafana dashboard built for vLLM reads these after replacing `vllm:` with
`vidgraph:` (every family carries the `model_name` label, as vLLM's do). The
frontend observes what only it can see: request counts by status and, for
errors, by reason; TTFT, inter-token, end-to-end and queue latency; tokens;
requests running and waiting. At scrape time it also gathers every worker's
own stats: vLLM's engine families from the engine's counters
(`kv_cache_usage_perc`, `prefix_cache_hits`/`queries`, `num_preemptions`), each worker's
per-stage durations (`components.stage_times`) as
`vidgraph:stage_duration_seconds`, and every other stat as one gauge family
`vidgraph_worker_stat` labelled by component, instance and stat, so adding a
counter to a worker needs no change here.
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

# Worker stats at scrape time: component -> instance id -> stat name -> value.
WorkerStats = dict[str, dict[str, dict[str, float]]]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
STAGE_PREFIX = "stage_seconds:"  # components.stage_times.PREFIX
# Engine counters workers report, as vLLM's counter families (vLLM counts tokens too).
_ENGINE_COUNTERS = {
    "prefix_cache_hit_tokens": ("vidgraph:prefix_cache_hits", "Prefix-cache hits, in tokens"),
    "prefix_cache_queried_tokens": (
        "vidgraph:prefix_cache_queries",
        "Prefix-cache queries, in tokens",
    ),
    "preemptions": ("vidgraph:num_preemptions", "Sequences preempted (and recomputed)"),
}


class _WorkerStatsCollector(Collector):
    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self.latest: WorkerStats = {}

    def collect(self) -> Iterable[Metric]:
        family = GaugeMetricFamily(
            "vidgraph_worker_stat",
            "A worker's own counter, as its stats endpoint reported it at scrape time",
            labels=["component", "instance", "stat"],
        )
        engine: dict[str, float] = {}
        usage: list[float] = []  # each KV-holding instance's fraction of blocks in use
        stages: dict[tuple[str, str], dict[str, float]] = {}
        for component, instances in sorted(self.latest.items()):
            for instance, stats in sorted(instances.items()):
                if stats.get("kv_blocks_total"):
                    usage.append(1 - stats.get("kv_blocks_free", 0) / stats["kv_blocks_total"])
                for stat, value in sorted(stats.items()):
                    if not isinstance(value, int | float):  # a label-like stat has no value
                        continue
                    if stat.startswith(STAGE_PREFIX):
                        stage, _, bound = stat.removeprefix(STAGE_PREFIX).rpartition(":")
                        into = stages.setdefault((component, stage), {})
                        into[bound] = into.get(bound, 0.0) + value
                        continue
                    if stat in _ENGINE_COUNTERS:
                        engine[stat] = engine.get(stat, 0.0) + value
                    family.add_metric([component, instance, stat], float(value))
        yield family
        yield from self._engine_families(engine, usage)
        yield self._stage_family(stages)

    def _engine_families(self, sums: dict[str, float], usage: list[float]) -> Iterable[Metric]:
        if usage:
            gauge = GaugeMetricFamily(
                "vidgraph:kv_cache_usage_perc",
                "KV-cache usage (1 = full), averaged over the workers holding KV",
                labels=["model_name"],
            )
            gauge.add_metric([self.model_name], sum(usage) / len(usage))
            yield gauge
        for stat, (name, help_text) in _ENGINE_COUNTERS.items():
            if stat in sums:
                total = CounterMetricFamily(name, help_text, labels=["model_name"])
                total.add_metric([self.model_name], sums[stat])
                yield total

    def _stage_family(self, stages: dict[tuple[str, str], dict[str, float]]) -> Metric:
        family = HistogramMetricFamily(
            "vidgraph:stage_duration_seconds",
            "Time in one stage of the graph (fetch, decode, encode, embedding transfer, "
            "prefill, KV transfer), per component",
            labels=["model_name", "component", "stage"],
        )
        for (component, stage), values in sorted(stages.items()):
            buckets = sorted(
                (
                    (bound, count)
                    for bound, count in values.items()
                    if bound not in ("sum", "count")
                ),
                key=lambda item: float(item[0]),
            )
            family.add_metric(
                [self.model_name, component, stage],
                [("+Inf" if bound == "inf" else bound, count) for bound, count in buckets],
                values.get("sum", 0.0),
            )
        return family


class FrontendMetrics:
    def __init__(self, model_name: str = "") -> None:
        self.model_name = model_name
        self.registry = CollectorRegistry()
        model = ["model_name"]

        def histogram(name: str, doc: str) -> Histogram:
            family = Histogram(name, doc, model, buckets=_LATENCY_BUCKETS, registry=self.registry)
            return family.labels(model_name=model_name)

        self._requests = Counter(
            "vidgraph:requests",
            "Requests answered, by HTTP status (499: the client went away)",
            ["model_name", "status"],
            registry=self.registry,
        )
        self._errors = Counter(
            "vidgraph:request_errors",
            "Requests answered 4xx or 5xx, by status and reason (the error's code or type)",
            ["model_name", "status", "reason"],
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "vidgraph:num_requests_running",
            "Requests admitted and being answered now",
            model,
            registry=self.registry,
        ).labels(model_name=model_name)
        self.waiting = Gauge(
            "vidgraph:num_requests_waiting",
            "Requests queued for admission",
            model,
            registry=self.registry,
        ).labels(model_name=model_name)
        self.ttft = histogram(
            "vidgraph:time_to_first_token_seconds", "From request to the first generated token"
        )
        self.itl = histogram(
            "vidgraph:inter_token_latency_seconds", "Between consecutive generated tokens"
        )
        self.e2e = histogram(
            "vidgraph:e2e_request_latency_seconds", "From request to its last token"
        )
        self.queue_time = histogram("vidgraph:request_queue_time_seconds", "Waiting for admission")
        self.prompt_tokens = Counter(
            "vidgraph:prompt_tokens",
            "Prompt tokens, video tokens included",
            model,
            registry=self.registry,
        ).labels(model_name=model_name)
        self.completion_tokens = Counter(
            "vidgraph:generation_tokens", "Generated tokens", model, registry=self.registry
        ).labels(model_name=model_name)
        self._workers = _WorkerStatsCollector(model_name)
        self.registry.register(self._workers)

    def answered(self, status: int | str, reason: str | None = None) -> None:
        """Count one answered request; an error also by its reason."""
        self._requests.labels(model_name=self.model_name, status=str(status)).inc()
        if int(status) >= 400:
            self._errors.labels(
                model_name=self.model_name, status=str(status), reason=reason or "unknown"
            ).inc()

    def render(self, worker_stats: WorkerStats, waiting: int = 0) -> tuple[bytes, str]:
        self._workers.latest = worker_stats
        self.waiting.set(waiting)
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
