"""A message msgpack cannot encode fails its own request, and the link keeps working.

Before the fix, one request with an integer past 64 bits (`"seed": 2**80`)
or a lone surrogate in its text killed the sending task of the frontend's
connection to a processor: every later request on it hung until its deadline.
Real sockets, one process: the request plane's two ends talking over TCP.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
import zmq.asyncio

from protocol.errors import ServiceError
from runtime.connection import Connection
from runtime.server import Context, EndpointServer


async def echo(request: Any, ctx: Context) -> AsyncIterator[Any]:
    yield request


async def reply_with(request: Any, ctx: Context) -> AsyncIterator[Any]:
    yield {"huge": 2**80} if request == "unsendable" else request


@pytest.fixture
async def link() -> AsyncIterator[Connection]:
    context = zmq.asyncio.Context()
    server = EndpointServer(context, {"echo": echo, "reply_with": reply_with}, "127.0.0.1")
    connection = Connection(context, f"tcp://127.0.0.1:{server.port}")
    yield connection
    await connection.close("test over")
    await server.close()
    context.destroy(linger=0)


async def ask(link: Connection, endpoint: str, body: Any) -> list[Any]:
    return [r async for r in link.stream(endpoint, body, timeout_s=5, request_id="r")]


@pytest.mark.parametrize("body", [{"seed": 2**80}, {"text": "\ud800"}], ids=["int", "surrogate"])
async def test_unsendable_request_is_a_400_and_the_link_lives(link: Connection, body: Any) -> None:
    with pytest.raises(ServiceError) as refused:
        await ask(link, "echo", body)
    assert refused.value.status == 400
    assert await ask(link, "echo", {"seed": 1}) == [{"seed": 1}]


async def test_unsendable_reply_is_an_error_and_the_link_lives(link: Connection) -> None:
    with pytest.raises(ServiceError) as failed:
        await ask(link, "reply_with", "unsendable")
    assert "cannot be encoded" in failed.value.message
    assert await ask(link, "reply_with", "fine") == ["fine"]
