"""/metrics under vLLM's names: model_name on every family, errors by reason, stage histograms."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from components.stage_times import StageTimes
from routes.metrics import FrontendMetrics

ROOT = Path(__file__).resolve().parents[2]


def samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body.decode())
        for s in family.samples
    }


def test_errors_are_counted_by_status_and_reason_and_every_family_names_the_model() -> None:
    metrics = FrontendMetrics("tiny")
    metrics.answered(200)
    metrics.answered(404, "model_not_found")
    metrics.answered(502, "upstream_error")
    metrics.ttft.observe(0.2)
    body, _ = metrics.render({}, waiting=3)
    got = samples(body)
    model = ("model_name", "tiny")
    assert got[("vidgraph:requests_total", (model, ("status", "200")))] == 1
    errors = "vidgraph:request_errors_total"
    assert got[(errors, (model, ("reason", "model_not_found"), ("status", "404")))] == 1
    assert got[(errors, (model, ("reason", "upstream_error"), ("status", "502")))] == 1
    assert got[("vidgraph:num_requests_waiting", (model,))] == 3
    assert got[("vidgraph:time_to_first_token_seconds_count", (model,))] == 1
    assert all(
        dict(labels).get("model_name") == "tiny"
        for name, labels in got
        if name.startswith("vidgraph:") and not name.endswith("_created")
    )


def test_worker_stage_times_become_one_histogram_family_summed_over_instances() -> None:
    first, second = StageTimes(), StageTimes()
    first.observe("fetch", 0.003)
    second.observe("fetch", 0.2)
    second.observe("fetch", 100.0)
    stats = {
        "EncodeWorker": {"a": {**first.stats(), "inflight": 0}, "b": second.stats()},
        "DecodeWorker": {"c": {"kv_blocks_total": 8, "kv_blocks_free": 6}},
        "PrefillWorker": {"d": {"kv_blocks_total": 4, "kv_blocks_free": 1, "preemptions": 2}},
    }
    got = samples(FrontendMetrics("tiny").render(stats)[0])
    labels = (("component", "EncodeWorker"), ("model_name", "tiny"), ("stage", "fetch"))
    bucket = "vidgraph:stage_duration_seconds_bucket"
    assert got[(bucket, (*labels[:1], ("le", "0.005"), *labels[1:]))] == 1
    assert got[(bucket, (*labels[:1], ("le", "0.25"), *labels[1:]))] == 2
    assert got[(bucket, (*labels[:1], ("le", "+Inf"), *labels[1:]))] == 3
    assert got[("vidgraph:stage_duration_seconds_count", labels)] == 3
    assert got[("vidgraph:kv_cache_usage_perc", (("model_name", "tiny"),))] == 0.5  # .25, .75
    assert got[("vidgraph:num_preemptions_total", (("model_name", "tiny"),))] == 2
    assert not any("stage_seconds" in dict(k[1]).get("stat", "") for k in got)


def test_the_grafana_dashboard_queries_only_metrics_the_frontend_exports() -> None:
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "vidgraph-dashboard.json").read_text())
    times = StageTimes()
    times.observe("fetch", 0.1)
    engine = {"kv_blocks_total": 8, "kv_blocks_free": 6, "preemptions": 0}
    engine |= {"prefix_cache_hit_tokens": 1, "prefix_cache_queried_tokens": 2}
    stats = {"DecodeWorker": {"c": {**engine, **times.stats()}}}
    metrics = FrontendMetrics("tiny")
    metrics.answered(500, "x")
    exported = {name for name, _ in samples(metrics.render(stats)[0])}
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"vidgraph:[a-z0-9_]+", target["expr"])
    }
    assert len(dashboard["panels"]) >= 10
    assert queried and queried <= exported, queried - exported
