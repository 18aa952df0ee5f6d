"""Every streaming route gives its admission slot back exactly once, however the stream ends.

A real uvicorn server (port 0) in the test's event loop, over a stand-in
Processor whose first output waits for the test: the client can leave before
the response starts, and the test waits on states (the server has seen the
disconnect, the slot count), never on a clock.

uvicorn speaks ASGI 2.3: Starlette watches for the disconnect itself and
cancels the body while it runs. Servers that speak 2.4 (hypercorn, granian)
instead raise OSError from `send` once the client has gone, and Starlette then
leaves the body unclosed, or never starts it. `Asgi24` makes uvicorn answer as
they do, once the test has seen uvicorn notice the disconnect. Every streaming
response is kept alive for the test's length (as a traceback or a log record
holding it would), so a release that only the garbage collector's closing of
the body would run never comes.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
from routes_fakes import StandInProcessor
from starlette.responses import StreamingResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from protocol.errors import ServiceError
from routes.admission import Admission
from routes.app import build_app
from routes.metrics import FrontendMetrics
from routes.state import FrontendState

BOUND_S = 30.0  # generous: the states below come within milliseconds on an idle machine
BODIES = {
    "/v1/chat/completions": {
        "model": "tiny",
        "messages": [{"role": "user", "content": "hi"}],
        "stream": True,
    },
    "/v1/completions": {"model": "tiny", "prompt": "hi", "stream": True},
}
# The app route answers only once the first output has come (no keep-alives).
APP_BODIES = {
    "/v1/inference/url": {"video_url": "https://example.com/v.mp4", "prompt": "hi", "stream": True}
}


@pytest.fixture(autouse=True)
def kept_responses(monkeypatch: pytest.MonkeyPatch) -> list[StreamingResponse]:
    kept: list[StreamingResponse] = []
    init = StreamingResponse.__init__

    def keep(self: StreamingResponse, *args: Any, **kwargs: Any) -> None:
        kept.append(self)
        init(self, *args, **kwargs)

    monkeypatch.setattr(StreamingResponse, "__init__", keep)
    return kept


class GatedProcessor(StandInProcessor):
    """Answers once `go` is set, or raises `error` then; records each request's deadline."""

    def __init__(self, error: ServiceError | None = None) -> None:
        self.arrived = asyncio.Event()
        self.go = asyncio.Event()
        self.error = error
        self.deadlines: list[float | None] = []

    async def before_answer(self, deadline_s: float | None) -> None:
        self.deadlines.append(deadline_s)
        self.arrived.set()
        await self.go.wait()
        if self.error is not None:
            raise self.error


class Asgi24:
    """The app as a server speaking ASGI 2.4 runs it: `send` raises OSError once `gone`."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.gone = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope["asgi"] = {**scope.get("asgi", {}), "spec_version": "2.4"}

        async def send_unless_gone(message: Message) -> None:
            if self.gone:
                raise OSError("the client has disconnected")
            await send(message)

        await self.app(scope, receive, send_unless_gone)


class CountingAdmission(Admission):
    def __init__(self) -> None:
        super().__init__(4)
        self.left = 0

    def leave(self) -> None:
        self.left += 1
        super().leave()


class Served:
    def __init__(self, processor: GatedProcessor, keepalive_s: float, spec: str = "2.3") -> None:
        self.processor = processor
        self.admission = CountingAdmission()
        self.state = FrontendState(
            model_name="tiny",
            components={"Processor": processor},
            model_types={"chat": "Processor"},
            request_timeout_s=60,
            admission=self.admission,
            metrics=FrontendMetrics(),
            keepalive_s=keepalive_s,
        )
        self.app = Asgi24(build_app(self.state, max_request_bytes=1 << 20))
        app = self.app if spec == "2.4" else self.app.app
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.port = 0

    async def __aenter__(self) -> Served:
        self.task = asyncio.create_task(self.server.serve())
        await until(lambda: self.server.started)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_: object) -> None:
        self.server.should_exit = True
        await asyncio.wait_for(self.task, BOUND_S)

    @property
    def inflight(self) -> int:
        return self.state.admission.inflight

    async def client_gone(self) -> None:
        """Wait until uvicorn has seen the client hang up; from then on, `send` fails (2.4)."""
        await until(lambda: not self.server.server_state.connections, "the disconnect")
        self.app.gone = True


async def until(condition: Callable[[], bool], what: str = "the state") -> None:
    """Wait (generously bounded) until `condition()` holds."""
    deadline = asyncio.get_running_loop().time() + BOUND_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{what} did not come within {BOUND_S} s")
        await asyncio.sleep(0.01)


async def post_and_leave(port: int, path: str, arrived: Awaitable[Any]) -> None:
    """Send a POST on a raw connection, wait until the Processor has it, then hang up."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({**BODIES, **APP_BODIES}[path]).encode()
    head = (
        f"POST {path} HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    await arrived
    writer.close()
    await writer.wait_closed()


SPECS = ["2.3", "2.4"]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("path", sorted(BODIES) + sorted(APP_BODIES))
async def test_a_client_gone_before_the_response_starts_frees_its_slot(
    path: str, spec: str
) -> None:
    # Under 2.4 the response's first send fails and its body never runs: only the
    # response itself can release what the request holds.
    async with Served(GatedProcessor(), keepalive_s=BOUND_S, spec=spec) as served:
        await post_and_leave(served.port, path, served.processor.arrived.wait())
        assert served.inflight == 1
        await served.client_gone()
        served.processor.go.set()  # the first output comes; the response starts, to no one
        await until(lambda: served.inflight == 0, "the slot's release")
    assert served.admission.left == 1


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("path", sorted(BODIES))
async def test_a_client_gone_during_keep_alives_frees_its_slot(path: str, spec: str) -> None:
    async with Served(GatedProcessor(), keepalive_s=0.01, spec=spec) as served:
        await post_and_leave(served.port, path, served.processor.arrived.wait())
        await served.client_gone()
        await until(lambda: served.inflight == 0, "the slot's release")
    assert served.admission.left == 1


@pytest.mark.parametrize("path", sorted(BODIES))
async def test_a_stream_that_ends_or_fails_frees_its_slot_once(path: str) -> None:
    for error in (None, ServiceError("the worker failed", status=502, type="upstream_error")):
        async with Served(GatedProcessor(error), keepalive_s=0.01) as served:
            url = f"http://127.0.0.1:{served.port}{path}"
            async with httpx.AsyncClient(timeout=BOUND_S) as client:
                async with client.stream("POST", url, json=BODIES[path]) as response:
                    assert response.status_code == 200
                    await served.processor.arrived.wait()
                    served.processor.go.set()
                    lines = [line async for line in response.aiter_lines() if line]
            assert lines[-1] == "data: [DONE]"
            assert ("upstream_error" in lines[-2]) == (error is not None)
            await until(lambda: served.inflight == 0, "the slot's release")
        assert served.admission.left == 1  # the server has stopped: nothing released it twice
