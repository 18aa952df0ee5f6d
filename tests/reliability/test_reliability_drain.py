"""Graceful drain: SIGTERM a frontend while requests stream through it.

It must answer /health with 503 at once (so a load balancer stops sending),
refuse new requests with 503 and Retry-After, finish every request it had
already accepted, and then exit 0.
"""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from reliability_helpers import (
    ExtraFrontend,
    chat_body,
    frontend_finished,
    frontend_in_flight,
    frontend_metrics,
    frontend_ready,
    send_all,
    tally,
    wait_until,
)

IN_FLIGHT = 8
# Generous bounds on states the test waits for: a loaded 2-core CI machine is slow, never stuck.
READY_S = 120.0
ADMITTED_S = 120.0
ANSWER_TOKENS = 2048


def test_sigterm_drains_the_frontend(
    start_frontend: Callable[..., ExtraFrontend], media_dir: Path
) -> None:
    frontend = start_frontend()
    # A new frontend answers /live before it has discovered the graph's processors;
    # requests sent then would be refused, not drained.
    wait_until(
        "the extra frontend finds every component",
        lambda: frontend_ready(frontend.base_url),
        READY_S,
    )

    def all_admitted_some_running() -> bool:
        # Under load, the first requests may finish before the last arrive: what the
        # drain needs is that the frontend accepted all of them and is still serving some.
        metrics = frontend_metrics(frontend.base_url)
        running = frontend_in_flight(metrics)
        return running >= 1 and running + frontend_finished(metrics) == IN_FLIGHT

    async def run() -> tuple[list, httpx.Response, httpx.Response]:
        # Long answers: 256 tokens took ~2 s, a window a poller on a loaded host missed.
        bodies = [chat_body(media_dir, i, max_tokens=ANSWER_TOKENS) for i in range(IN_FLIGHT)]
        sending = asyncio.create_task(send_all(frontend.base_url, bodies))
        await asyncio.to_thread(
            wait_until,
            "every request admitted by the frontend, some still running",
            all_admitted_some_running,
            ADMITTED_S,
        )
        frontend.process.send_signal(signal.SIGTERM)
        async with httpx.AsyncClient(base_url=frontend.base_url) as client:
            health = await _draining_health(client)
            refused = await client.post("/v1/chat/completions", json=chat_body(media_dir, 3))
        return await sending, health, refused

    outcomes, health, refused = asyncio.run(run())

    assert health.json()["status"] == "draining"
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert tally(outcomes) == {"answered": IN_FLIGHT, "errored": 0, "lost": 0}, outcomes
    assert frontend.process.wait(timeout=60) == 0


async def _draining_health(client: httpx.AsyncClient) -> httpx.Response:
    """The first /health after the signal arrives (moments, or seconds on a loaded machine)."""
    deadline = time.monotonic() + 30
    while True:
        health = await client.get("/health")
        if health.status_code == 503 or time.monotonic() > deadline:
            return health
        await asyncio.sleep(0.02)
