"""The SSE relay against a stand-in Processor: keep-alive comments before a slow first token.

The graph is replaced by a stub whose first output waits for the test, so the
keep-alive is observed deterministically rather than by racing a slow video.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from typing import Any

from fastapi.testclient import TestClient

from protocol.messages import ProcessorOutput
from routes.admission import Admission
from routes.app import build_app
from routes.metrics import FrontendMetrics
from routes.state import FrontendState

BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class SlowProcessor:
    """Answers one token once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def stream(
        self, endpoint: str, request: Any, *, deadline_s: float | None = None
    ) -> AsyncIterator[Any]:
        await asyncio.to_thread(self.release.wait, 30)
        yield ProcessorOutput(
            text="ok",
            token_ids=[5],
            finish_reason="stop",
            usage_prompt_tokens=3,
            usage_completion_tokens=1,
        ).model_dump()

    def instances(self) -> list[Any]:
        return []

    async def collect_stats(self) -> dict[str, dict[str, float]]:
        return {}


def app(processor: SlowProcessor) -> TestClient:
    state = FrontendState(
        model_name="tiny",
        components={"Processor": processor},
        model_types={"chat": "Processor"},
        request_timeout_s=30,
        admission=Admission(4),
        metrics=FrontendMetrics(),
        keepalive_s=0.05,
    )
    return TestClient(build_app(state, max_request_bytes=1 << 20))


def test_a_stream_sends_keep_alive_comments_until_its_first_token() -> None:
    processor = SlowProcessor()
    with app(processor).stream("POST", "/v1/chat/completions", json=BODY) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines) == ": keep-alive"
        processor.release.set()
        rest = [line for line in lines if line and line != ": keep-alive"]
    assert '"content":"ok"' in rest[1]
    assert rest[-1] == "data: [DONE]"
