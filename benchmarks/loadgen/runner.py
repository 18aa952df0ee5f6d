"""Drives one endpoint through a sweep of load points and summarizes each.

A load point is either closed-loop (`concurrency` requests always in flight, the
next sent when one finishes) or open-loop (Poisson arrivals at `rate` requests/s,
optionally capped at `concurrency` in flight). Every request body is serialized
before the clock starts, so the client spends its CPU reading streams, not
encoding videos, while it measures.
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import httpx

from benchmarks.loadgen.client import send
from benchmarks.loadgen.progress import Progress
from benchmarks.loadgen.record import RequestRecord
from benchmarks.loadgen.stats import Slo, summarize
from benchmarks.loadgen.workload import WARMUP, PreparedRequest, Workload

SendOne = Callable[[PreparedRequest], Awaitable[None]]
# Sends one request and records it: over HTTP by default, in-process for the baseline.
Sender = Callable[[PreparedRequest], Awaitable[RequestRecord]]


@dataclass(frozen=True)
class LoadPoint:
    """Closed loop at `concurrency`, or Poisson arrivals at `rate` (capped by `concurrency`)."""

    concurrency: int | None = None
    rate: float | None = None

    def __str__(self) -> str:
        if self.rate is None:
            return f"concurrency {self.concurrency}"
        cap = f", at most {self.concurrency} in flight" if self.concurrency else ""
        return f"rate {self.rate:g}/s{cap}"


@dataclass(frozen=True)
class RunConfig:
    """What stays the same across the load points of one sweep."""

    base_url: str
    model: str
    num_requests: int
    duration_s: float | None = None
    warmup: int = 0
    slo: Slo = Slo()
    seed: int = 0
    request_timeout_s: float = 600.0
    save_requests: bool = False

    @property
    def chat_url(self) -> str:
        return self.base_url.rstrip("/") + "/chat/completions"


async def wait_ready(client: httpx.AsyncClient, config: RunConfig, timeout_s: float) -> None:
    """Retries a one-token text request until it streams an answer.

    `GET /models` is not enough: a graph's frontend answers it before any worker
    has registered. So a driver can start a server and this back to back.
    """
    body = {
        "model": config.model,
        "messages": [{"role": "user", "content": "ping"}],
        "max_tokens": 1,
        "stream": True,
    }
    probe = PreparedRequest("probe", json.dumps(body).encode())
    deadline = time.monotonic() + timeout_s
    while not (record := await send(client, config.chat_url, probe)).ok:
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"{config.chat_url} did not answer within {timeout_s:g} s; last: {record.error}"
            )
        await asyncio.sleep(1.0)


async def closed_loop(
    send_one: SendOne, requests: Sequence[PreparedRequest], concurrency: int, deadline: float | None
) -> None:
    pending = iter(requests)

    async def user() -> None:
        for request in pending:
            if deadline is not None and time.perf_counter() >= deadline:
                return
            await send_one(request)

    await asyncio.gather(*(user() for _ in range(concurrency)))


async def open_loop(
    send_one: SendOne,
    requests: Sequence[PreparedRequest],
    rate: float,
    max_in_flight: int | None,
    deadline: float | None,
    seed: int,
) -> None:
    """Poisson arrivals: exponential gaps drawn from `seed`, so the schedule is reproducible."""
    gaps = random.Random(seed)
    slots = asyncio.Semaphore(max_in_flight) if max_in_flight else None

    async def arrive(request: PreparedRequest) -> None:
        if slots is None:
            return await send_one(request)
        async with slots:
            await send_one(request)

    tasks = []
    send_at = time.perf_counter()
    for request in requests:
        if deadline is not None and send_at >= deadline:
            break
        await asyncio.sleep(max(0.0, send_at - time.perf_counter()))
        tasks.append(asyncio.create_task(arrive(request)))
        send_at += gaps.expovariate(rate)
    await asyncio.gather(*tasks)


async def run_point(
    sender: Sender,
    config: RunConfig,
    point: LoadPoint,
    requests: Sequence[PreparedRequest],
    label: str,
) -> dict:
    """One load point: sends `requests`, returns its summary (and its records if asked)."""
    records: list[RequestRecord] = []
    progress = Progress(f"{label} {point}", None if config.duration_s else len(requests))

    async def send_one(request: PreparedRequest) -> None:
        record = await sender(request)
        records.append(record)
        progress.advance(record.ok)

    start = time.perf_counter()
    deadline = start + config.duration_s if config.duration_s else None
    if point.rate is None:
        await closed_loop(send_one, requests, point.concurrency or 1, deadline)
    else:
        await open_loop(send_one, requests, point.rate, point.concurrency, deadline, config.seed)
    duration_s = time.perf_counter() - start
    progress.close()
    if config.duration_s and len(records) == len(requests):
        print(
            f"warning: all {len(requests)} prepared requests were sent before --duration "
            "ended; raise --num-requests",
            file=sys.stderr,
        )
    result = {
        "concurrency": point.concurrency,
        "rate": point.rate,
        "summary": summarize(records, duration_s, config.slo),
        "error_samples": sorted({r.error for r in records if r.error})[:5],
    }
    if config.save_requests:
        result["requests"] = [r.to_json() for r in records]
    return result


async def warm_up(sender: Sender, workload: Workload, config: RunConfig) -> None:
    """`config.warmup` unmeasured requests of the warm-up stream, one at a time."""
    for request in workload.prepare(range(config.warmup), config.model, WARMUP):
        record = await sender(request)
        if not record.ok:
            print(f"warning: warm-up request failed: {record.error}", file=sys.stderr)


async def run_sweep(
    config: RunConfig,
    workload: Workload,
    points: Sequence[LoadPoint],
    label: str,
    wait_ready_s: float = 0.0,
    sender: Sender | None = None,
) -> list[dict]:
    """All load points in order against one server, after an optional warm-up.

    Each load point gets the next slice of the request stream, so a "fresh" video
    is never sent twice in a sweep and the server's cache sees only the repeats.
    `sender` replaces HTTP (the in-process baseline); by default requests go to
    `config.base_url`.
    """
    timeout = httpx.Timeout(config.request_timeout_s, connect=10.0)
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    async with httpx.AsyncClient(timeout=timeout, limits=limits, trust_env=False) as client:
        if sender is None:
            if wait_ready_s:
                await wait_ready(client, config, wait_ready_s)

            async def sender(request: PreparedRequest) -> RequestRecord:
                return await send(client, config.chat_url, request)

        await warm_up(sender, workload, config)
        runs, offset = [], 0
        for point in points:
            indices = range(offset, offset + config.num_requests)
            offset += config.num_requests
            requests = workload.prepare(indices, config.model)
            runs.append(await run_point(sender, config, point, requests, label))
    return runs
