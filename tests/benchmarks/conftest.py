"""A fake OpenAI-compatible SSE server on 127.0.0.1, real uvicorn, for the load generator."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
import uvicorn


@dataclass
class FakeServer:
    """Streams `max_tokens` one-word chunks; model "broken" gets an HTTP 500 instead.

    The next `unavailable_for` chat requests get a 503, as from a graph whose
    workers have not registered yet.

    The first token comes `first_token_delay_s` after the role chunk, the next ones
    `token_delay_s` apart, so the generator's TTFT and ITL have known lower bounds.
    """

    base_url: str = ""
    first_token_delay_s: float = 0.03
    token_delay_s: float = 0.01
    unavailable_for: int = 0
    bodies: list[dict] = field(default_factory=list)

    async def __call__(self, scope: dict, receive, send) -> None:
        if scope["type"] != "http":
            return
        if scope["method"] == "GET" and scope["path"] == "/v1/models":
            return await _respond(send, 200, b'{"object": "list", "data": []}')
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(body)
        self.bodies.append(request)
        if self.unavailable_for:
            self.unavailable_for -= 1
            return await _respond(send, 503, b'{"error": "no workers yet"}')
        if request["model"] == "broken":
            return await _respond(send, 500, b'{"error": "broken on purpose"}')
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await _event(send, {"choices": [{"index": 0, "delta": {"role": "assistant"}}]})
        await asyncio.sleep(self.first_token_delay_s)
        for i in range(request["max_tokens"]):
            if i:
                await asyncio.sleep(self.token_delay_s)
            await _event(send, {"choices": [{"index": 0, "delta": {"content": f"w{i} "}}]})
        usage = {"prompt_tokens": 7, "completion_tokens": request["max_tokens"]}
        await _event(send, {"choices": [], "usage": usage})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _respond(send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _event(send, chunk: dict) -> None:
    data = f"data: {json.dumps(chunk)}\n\n".encode()
    await send({"type": "http.response.body", "body": data, "more_body": True})


@pytest.fixture(scope="module")
def fake_server() -> Iterator[FakeServer]:
    app = FakeServer()
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    app.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started and thread.is_alive():
        threading.Event().wait(0.01)
    try:
        yield app
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()
