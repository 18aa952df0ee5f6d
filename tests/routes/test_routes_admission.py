"""Admission: a bounded FIFO queue beyond max-inflight, 429 only when it is full, a drain;
by default both bounds follow the capacity the graph's workers register."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from routes_fakes import StandInProcessor

from protocol.errors import ServiceError
from routes.admission import FALLBACK_LIMIT, Admission, admission_limits
from routes.metrics import FrontendMetrics
from routes.state import FrontendState


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


def test_unconfigured_limits_are_the_graphs_capacity_and_configured_ones_win() -> None:
    assert admission_limits(64) == (128, 128)  # a batch decoding, the next on its way
    assert admission_limits(64, max_inflight=8) == (8, 128)
    assert admission_limits(64, max_queued=0) == (128, 0)
    assert admission_limits(0) == (FALLBACK_LIMIT, FALLBACK_LIMIT)  # no worker reports one


class Registered(StandInProcessor):
    """A component's client whose live instances registered these capacities."""

    def __init__(self, *capacities: int | None) -> None:
        self.capacities = capacities

    def instances(self) -> list[Any]:
        return [SimpleNamespace(capacity=capacity) for capacity in self.capacities]


def test_the_graphs_capacity_sums_what_its_live_instances_registered() -> None:
    state = FrontendState(
        model_name="tiny",
        components={
            "Processor": Registered(None, None),
            "DecodeWorker": Registered(32, 16),
            "EncodeWorker": Registered(None),
        },
        model_types={"chat": "Processor"},
        request_timeout_s=5,
        admission=Admission(1),
        metrics=FrontendMetrics(),
    )
    assert state.capacity() == 48
    state.components["DecodeWorker"] = Registered()  # every decode worker gone
    assert state.capacity() == 0


async def test_a_larger_capacity_admits_the_queue_at_once_a_smaller_lets_the_admitted_finish() -> (
    None
):
    admission = Admission(max_inflight=1, max_queued=4, max_queue_wait_s=30)
    await admission.admit()
    waiters = [asyncio.create_task(admission.admit()) for _ in range(3)]
    while admission.queued < 3:
        await asyncio.sleep(0)
    admission.resize(3, 4)  # a second worker registered: two more run now, no one left
    while admission.queued > 1:
        await asyncio.sleep(0)
    assert admission.inflight == 3 and admission.queued == 1

    admission.resize(1, 4)  # it went away again: the three admitted finish first
    admission.leave()
    admission.leave()
    assert admission.inflight == 1 and admission.queued == 1
    admission.leave()
    await asyncio.gather(*waiters)
    assert admission.inflight == 1 and admission.queued == 0
