"""The SSE relay against a stand-in Processor: keep-alive comments before a slow first token.

The graph is replaced by a stub whose first output waits for the test, so the
keep-alive is observed deterministically rather than by racing a slow video.
"""

from __future__ import annotations

import asyncio
import threading

from fastapi.testclient import TestClient
from routes_fakes import StandInProcessor

from routes.admission import Admission
from routes.app import build_app
from routes.metrics import FrontendMetrics
from routes.state import FrontendState

BODY = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stream": True}


class SlowProcessor(StandInProcessor):
    """Answers one token once `release` is set."""

    def __init__(self) -> None:
        self.release = threading.Event()

    async def before_answer(self, deadline_s: float | None) -> None:
        await asyncio.to_thread(self.release.wait, 30)


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
