"""Admission: a bounded FIFO queue beyond max-inflight, 429 only when it is full, a drain."""

from __future__ import annotations

import asyncio

import pytest

from protocol.errors import ServiceError
from routes.admission import Admission


async def test_requests_beyond_the_limit_wait_their_turn_in_order() -> None:
    admission = Admission(max_inflight=1, max_queued=3, max_queue_wait_s=30)
    await admission.admit()
    order: list[int] = []

    async def wait(i: int) -> None:
        await admission.admit()
        order.append(i)

    waiters = [asyncio.create_task(wait(i)) for i in range(3)]
    while admission.queued < 3:
        await asyncio.sleep(0)
    for admitted in range(1, 4):
        admission.leave()
        while len(order) < admitted:
            await asyncio.sleep(0)
    await asyncio.gather(*waiters)
    assert order == [0, 1, 2]
    assert admission.inflight == 1


async def test_only_a_full_queue_is_a_429() -> None:
    admission = Admission(max_inflight=1, max_queued=1, max_queue_wait_s=30)
    await admission.admit()
    queued = asyncio.create_task(admission.admit())
    while admission.queued < 1:
        await asyncio.sleep(0)
    with pytest.raises(ServiceError) as refused:
        await admission.admit()
    assert refused.value.status == 429
    admission.leave()
    await queued
    assert admission.inflight == 1


async def test_a_request_that_waits_too_long_is_a_503_and_frees_its_place() -> None:
    admission = Admission(max_inflight=1, max_queued=1, max_queue_wait_s=0.05)
    await admission.admit()
    with pytest.raises(ServiceError) as late:
        await admission.admit()
    assert late.value.status == 503
    assert admission.queued == 0
    admission.leave()
    assert admission.inflight == 0


async def test_a_drain_refuses_the_queued_and_waits_for_the_admitted() -> None:
    admission = Admission(max_inflight=1, max_queued=2, max_queue_wait_s=30)
    await admission.admit()
    queued = asyncio.create_task(admission.admit())
    while admission.queued < 1:
        await asyncio.sleep(0)
    draining = asyncio.create_task(admission.drain(30))
    with pytest.raises(ServiceError) as refused:
        await queued
    assert refused.value.status == 503
    admission.leave()
    assert await draining == 0
