"""A two-component graph for the runtime's tests: an HTTP front that calls an echo worker.

The front uses uvicorn the way the real frontend does, so the tests also hold
the runtime's `run()` / `stop()` contract against a real HTTP server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from runtime import Client, Component, ComponentConfig, Context, ServiceError, endpoint


class EchoConfig(ComponentConfig):
    greeting: str = "echo"


class Echo(Component):
    """Streams `count` replies, optionally slowly, optionally failing after `fail_after`."""

    Config = EchoConfig

    async def start(self) -> None:
        self.served = 0
        self.cancelled = 0

    @endpoint
    async def echo(self, request: dict, ctx: Context) -> AsyncIterator[dict]:
        try:
            for index in range(request.get("count", 1)):
                if index == request.get("fail_after"):
                    if request.get("error") == "typed":
                        raise ServiceError("bad frame", status=422, param="video", code="bad")
                    raise ValueError("echo was asked to fail")
                await asyncio.sleep(request.get("delay_s", 0))
                yield {
                    "index": index,
                    "text": f"{self.config.greeting}: {request.get('text', '')}",
                    "pid": os.getpid(),
                    "instance_id": self.runtime.instance_id,
                    "time_left": ctx.time_left(),
                }
            self.served += 1
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled += 1
            raise

    def stats(self) -> dict[str, float]:
        return {"served": self.served, "cancelled": self.cancelled}


class FrontConfig(ComponentConfig):
    host: str = "127.0.0.1"
    port: int = 8000


class _Server(uvicorn.Server):
    """uvicorn without its own signal handling: the runtime owns SIGTERM and calls stop()."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Front(Component):
    """POST /echo {text, count} -> the echo worker's replies as a JSON list."""

    Config = FrontConfig

    async def start(self) -> None:
        self.echo = self.client(Echo)
        app = Starlette(routes=[Route("/echo", self.handle, methods=["POST"])])
        config = uvicorn.Config(app, host=self.config.host, port=self.config.port)
        self.server = _Server(config)

    async def run(self) -> None:
        await self.server.serve()

    async def stop(self) -> None:
        self.server.should_exit = True

    async def handle(self, request: Request) -> JSONResponse:
        try:
            body = await request.json()
            replies = [reply async for reply in self.echo.stream("echo", body, deadline_s=10)]
        except ServiceError as error:
            return JSONResponse(error.to_dict(), status_code=error.status)
        return JSONResponse(replies)


graph = Front.link(Echo)


async def echo_stats(client: Client) -> dict[str, float]:
    """The one Echo instance's stats. A round it did not answer within `collect_stats`'
    timeout (a fresh or busy worker on a loaded host) leaves it out: ask again."""
    deadline = time.monotonic() + 60
    while not (answers := await client.collect_stats()):
        assert time.monotonic() < deadline, "the Echo instance's stats never came back"
        await asyncio.sleep(0.05)
    [stats] = answers.values()
    return stats
