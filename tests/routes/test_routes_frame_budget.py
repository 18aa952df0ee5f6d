"""The frame budget: one request alone may use it all; requests that join get an equal share."""

from __future__ import annotations

import asyncio
import contextlib

from routes.frame_budget import FrameBudget


async def hold(
    budget: FrameBudget, key: object, started: list[object], release: asyncio.Event
) -> None:
    async with budget.frame(key):
        started.append(key)
        await release.wait()


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_lone_request_fills_the_budget_and_a_newcomer_gets_its_share_next() -> None:
    budget = FrameBudget(4)
    release = asyncio.Event()
    started: list[object] = []
    async with contextlib.AsyncExitStack() as stack:
        big = await stack.enter_async_context(budget.request())
        bigs = [asyncio.create_task(hold(budget, big, started, release)) for _ in range(10)]
        await settle()
        assert started == [big] * 4  # alone: the whole budget

        small = await stack.enter_async_context(budget.request())
        smalls = [asyncio.create_task(hold(budget, small, started, release)) for _ in range(3)]
        await settle()
        assert started.count(small) == 1  # always one frame in, even over the budget
        assert budget.share() == 2

        release.set()
        await asyncio.gather(*bigs, *smalls)
    assert budget.in_flight == 0


async def test_three_requests_sharing_the_budget_all_finish_within_it() -> None:
    budget = FrameBudget(6)
    peak = {"a": 0, "b": 0, "c": 0}
    current = {"a": 0, "b": 0, "c": 0}

    async def frame(name: str, key: object) -> None:
        async with budget.frame(key):
            current[name] += 1
            peak[name] = max(peak[name], current[name])
            await asyncio.sleep(0.001)
            current[name] -= 1

    async def request(name: str) -> None:
        async with budget.request() as key:
            await asyncio.sleep(0)
            await asyncio.gather(*(frame(name, key) for _ in range(30)))

    await asyncio.gather(*(request(n) for n in peak))
    assert max(peak.values()) <= 6
    assert budget.in_flight == 0
