"""Who may call the API and what it lets in: API keys, body size, CORS, and the schema itself.

Each test starts a Frontend of its own beside the shared graph (same etcd,
same namespace), so its requests are answered by the real graph behind it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from reliability_helpers import ExtraFrontend, chat_body, send_all

from graphs.serve import RunningGraph

KEY = "sk-reliability-3f9c2a7d"
CREDENTIAL = "hunter2-in-the-url"
EXAMPLES = 30  # per operation


@pytest.fixture(scope="module")
def keyed(start_frontend: Callable[..., ExtraFrontend]) -> ExtraFrontend:
    return start_frontend(env={"VIDGRAPH_API_KEY": KEY})


def test_api_key_is_required_on_v1_routes(keyed: ExtraFrontend, media_dir: Path) -> None:
    url = f"{keyed.base_url}/v1/chat/completions"
    body = {**chat_body(media_dir, 3), "stream": False}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY}):
        refused = httpx.post(url, json=body, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.json()["error"]["code"] == "invalid_api_key"
    assert httpx.get(f"{keyed.base_url}/v1/models").status_code == 401

    answered = httpx.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
    assert answered.status_code == 200, answered.text
    assert answered.json()["choices"][0]["finish_reason"] in ("stop", "length")
    # Probes and metrics stay open: a load balancer or Prometheus holds no key.
    for path in ("/live", "/health", "/metrics"):
        assert httpx.get(f"{keyed.base_url}{path}").status_code == 200, path


def test_logs_hold_no_key_and_no_url_credentials(keyed: ExtraFrontend, graph: RunningGraph) -> None:
    parts = [
        {"type": "text", "text": "What?"},
        {"type": "video_url", "video_url": {"url": f"https://user:{CREDENTIAL}@example.com/v.mp4"}},
    ]
    answer = httpx.post(
        f"{keyed.base_url}/v1/chat/completions",
        json={"model": "tiny", "messages": [{"role": "user", "content": parts}], "max_tokens": 2},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    # 400 where example.com resolves (it has no such file), 502 where DNS is unreachable.
    assert answer.status_code in (400, 502), answer.text
    for log in (keyed.log(), graph.log()):
        assert KEY not in log
        assert CREDENTIAL not in log


def test_body_over_the_limit_is_413_however_it_is_sent(
    start_frontend: Callable[..., ExtraFrontend],
) -> None:
    small = start_frontend("--Frontend.max-request-bytes=4096")
    url = f"{small.base_url}/v1/chat/completions"
    body = b'{"model": "tiny", "messages": [{"role": "user", "content": "' + b"a" * 8192 + b'"}]}'

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit must count as it reads
        yield from (body[i : i + 1000] for i in range(0, len(body), 1000))

    for content in (body, chunked()):
        refused = httpx.post(url, content=content, headers={"Content-Type": "application/json"})
        assert refused.status_code == 413
        assert refused.json()["error"]["code"] == "request_too_large"


def test_cors_is_off_unless_origins_are_configured(
    start_frontend: Callable[..., ExtraFrontend], graph: RunningGraph
) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
    default = httpx.options(f"{graph.base_url}/v1/chat/completions", headers=preflight)
    assert "access-control-allow-origin" not in default.headers

    allowing = start_frontend("--Frontend.cors-allow-origins=[https://app.example]")
    allowed = httpx.options(f"{allowing.base_url}/v1/chat/completions", headers=preflight)
    assert allowed.headers["access-control-allow-origin"] == "https://app.example"
    other = httpx.options(
        f"{allowing.base_url}/v1/chat/completions",
        headers={**preflight, "Origin": "https://evil.example"},
    )
    assert "access-control-allow-origin" not in other.headers


def test_same_client_request_id_twice_at_once_is_fine(graph: RunningGraph, media_dir: Path) -> None:
    """The id a client sends is only a label: two requests sharing it must both be answered."""
    bodies = [chat_body(media_dir, i) for i in (0, 0, 1, 1)]
    outcomes = asyncio.run(send_all(graph.base_url, bodies, headers={"x-request-id": "same-id"}))
    assert [o.kind for o in outcomes] == ["answered"] * len(bodies), outcomes


@schemathesis.hook
def map_body(context: schemathesis.HookContext, body: object) -> object:
    """Aim generated chat and completion requests past validation into the graph: the served
    model, few tokens.

    Media parts become text: random URLs would only test DNS failures, and the
    media path has its own fuzz (test_reliability_hostile, benchmarks.fuzz_media).
    """
    generating = ("/v1/chat/completions", "/v1/completions")
    if not (isinstance(body, dict) and context.operation and context.operation.path in generating):
        return body
    for message in body.get("messages") if isinstance(body.get("messages"), list) else []:
        if isinstance(message, dict) and isinstance(message.get("content"), list):
            message["content"] = [_as_text(part) for part in message["content"]]
    body = {**body, "model": "tiny", "max_tokens": 4}
    body.pop("max_completion_tokens", None)
    return body


def _as_text(part: object) -> object:
    if isinstance(part, dict) and part.get("type") in ("video_url", "image_url"):
        return {"type": "text", "text": "a video was here"}
    return part


def test_api_schema_no_server_errors(graph: RunningGraph) -> None:
    """schemathesis: generated requests for every operation get no 5xx and match the schema.

    Driven through hypothesis directly: schemathesis' pytest plugin does not
    load under pytest 9.
    """
    schema = schemathesis.openapi.from_url(f"{graph.base_url}/openapi.json")
    checks = [
        schemathesis.checks.not_a_server_error,
        schemathesis.checks.response_schema_conformance,
        schemathesis.checks.content_type_conformance,
    ]
    for operation in (result.ok() for result in schema.get_all_operations()):

        @given(case=operation.as_strategy())
        @settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the same cases every run: a failure reproduces
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=checks)

        check()
