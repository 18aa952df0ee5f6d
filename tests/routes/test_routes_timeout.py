"""A request's own `timeout` bounds it: queue wait, then the deadline the graph is given.

The graph is a stand-in that records the deadline each request arrives with
and, like the runtime's client, fails with DeadlineExceeded when it passes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from fastapi.testclient import TestClient
from routes_fakes import StandInProcessor

from protocol.errors import DeadlineExceeded
from routes.admission import Admission
from routes.app import build_app
from routes.metrics import FrontendMetrics
from routes.state import FrontendState

SERVER_LIMIT_S = 60.0
BODIES: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]},
    "/v1/completions": {"model": "tiny", "prompt": "hi"},
}


class Graph(StandInProcessor):
    """Records each request's deadline; with `hold`, answers only DeadlineExceeded, at it."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.deadlines: list[float] = []

    async def before_answer(self, deadline_s: float | None) -> None:
        assert deadline_s is not None
        self.deadlines.append(deadline_s)
        if self.hold:
            try:
                await asyncio.wait_for(asyncio.Event().wait(), deadline_s)
            except TimeoutError:
                raise DeadlineExceeded(f"'generate' did not finish in {deadline_s:.3g} s") from None


def client(processor: Graph, admission: Admission | None = None) -> TestClient:
    state = FrontendState(
        model_name="tiny",
        components={"Processor": processor},
        model_types={"chat": "Processor"},
        request_timeout_s=SERVER_LIMIT_S,
        admission=admission or Admission(4),
        metrics=FrontendMetrics(),
    )
    return TestClient(build_app(state, max_request_bytes=1 << 20))


@pytest.mark.parametrize("path", sorted(BODIES))
@pytest.mark.parametrize(
    ("timeout", "bound"), [(None, SERVER_LIMIT_S), (5.0, 5.0), (1e6, SERVER_LIMIT_S)]
)
def test_the_graph_gets_the_request_timeout_within_the_server_limit(
    path: str, timeout: float | None, bound: float
) -> None:
    processor = Graph()
    body = BODIES[path] if timeout is None else {**BODIES[path], "timeout": timeout}
    answer = client(processor).post(path, json=body)
    assert answer.status_code == 200, answer.text
    [deadline] = processor.deadlines
    assert bound - 5.0 < deadline <= bound  # less what the request spent before the graph


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("path", sorted(BODIES))
def test_a_request_past_its_timeout_is_a_504(path: str, stream: bool) -> None:
    processor = Graph(hold=True)
    answer = client(processor).post(path, json={**BODIES[path], "timeout": 0.2, "stream": stream})
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["type"] == "timeout"
    assert 0 < processor.deadlines[0] <= 0.2


def test_the_timeout_bounds_the_wait_for_a_slot() -> None:
    admission = Admission(max_inflight=0, max_queued=1, max_queue_wait_s=SERVER_LIMIT_S)
    processor = Graph()
    path = "/v1/chat/completions"
    answer = client(processor, admission).post(path, json={**BODIES[path], "timeout": 0.2})
    assert answer.status_code == 504, answer.text
    assert "timeout of 0.2 s" in answer.json()["error"]["message"]
    assert (admission.queued, admission.inflight, processor.deadlines) == (0, 0, [])


@pytest.mark.parametrize("timeout", [0, -1, "soon"])
def test_a_timeout_that_is_no_duration_is_a_400(timeout: object) -> None:
    path = "/v1/chat/completions"
    answer = client(Graph()).post(path, json={**BODIES[path], "timeout": timeout})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "timeout"
